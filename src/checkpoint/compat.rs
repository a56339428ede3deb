//! Which config changes a resume accepts. Resuming continues the same training: keys that decide
//! what the saved state means or how it evolves (the model, the optimiser, the data, the seed, the
//! global batch) must match; keys about how long, how often and where to report may change.
use std::collections::BTreeMap;

use crate::config::explain::flatten_value;
use crate::config::Config;

/// Keys (or whole sections, ending in '.') that may differ between a checkpoint and its resume.
pub const SAFE_TO_CHANGE: &[&str] = &[
    "train.steps",
    "train.log_every",
    "train.sample_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.threads",
    "train.host_memory",
    // Weights and optimiser state are fp32 either way: a run may resume in another precision.
    "train.autocast",
    "data.path",
    "data.workers",
    "data.prefetch",
    "data.cache_dir",
    "data.verify",
    "data.skip_bad",
    "dist.",
    "eval.",
    "output.",
];

fn keys(cfg_toml: &str) -> BTreeMap<String, String> {
    cfg_toml
        .parse::<toml::Table>()
        .map(|t| flatten_value(&toml::Value::Table(t)))
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

fn is_safe(key: &str) -> bool {
    SAFE_TO_CHANGE.iter().any(|s| {
        if s.ends_with('.') {
            key.starts_with(s)
        } else {
            key == *s
        }
    })
}

/// The keys whose change would break the resume, as "key: saved -> now", or empty when the current
/// config may continue the checkpoint's run.
pub fn breaking_changes(saved_toml: &str, now: &Config) -> Vec<String> {
    let (a, b) = (keys(saved_toml), keys(&now.to_toml()));
    let all: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    all.into_iter()
        .filter(|k| !is_safe(k) && a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(absent)".into());
            format!("{k}: {} -> {}", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_may_change_the_model_may_not() {
        let saved = Config::default();
        let mut now = saved.clone();
        now.train.steps += 100;
        now.eval.every = 7;
        now.output.dir = "elsewhere".into();
        assert!(breaking_changes(&saved.to_toml(), &now).is_empty());
        now.model.g_ch *= 2;
        now.train.lr_d = 1e-3;
        let diff = breaking_changes(&saved.to_toml(), &now);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert!(diff[0].starts_with("model.g_ch: 64 -> 128"), "{diff:?}");
        assert!(diff[1].starts_with("train.lr_d"), "{diff:?}");
    }
}
