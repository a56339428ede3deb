//! Config values the types alone cannot check: counts, rates, and where attention can sit in
//! the architecture table. Each error names the keys it is about, so loading can blame the file or
//! the override that set them.
use super::arch::Arch;
use super::{AttentionKind, Config};
use crate::error::{Error, Result};

/// A config value that is wrong: the keys it is about and what is wrong with them.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub keys: Vec<&'static str>,
    pub msg: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

fn invalid(keys: &[&'static str], msg: String) -> Invalid {
    Invalid {
        keys: keys.to_vec(),
        msg,
    }
}

impl Config {
    /// Checks values that the types alone cannot; the error names the keys it is about.
    pub fn validate(&self) -> std::result::Result<(), Invalid> {
        self.validate_counts()?;
        self.validate_rates()?;
        self.validate_augment()?;
        self.validate_architecture()
    }

    fn validate_counts(&self) -> std::result::Result<(), Invalid> {
        let m = &self.model;
        let t = &self.train;
        let positive_i = [
            ("model.img_channels", m.img_channels),
            ("model.num_classes", m.num_classes),
            ("model.z_dim", m.z_dim),
            ("model.g_ch", m.g_ch),
            ("model.d_ch", m.d_ch),
            ("train.steps", t.steps),
            ("train.batch_size", t.batch_size),
            ("train.d_steps", t.d_steps),
            ("train.log_every", t.log_every),
            ("train.keep_checkpoints", t.keep_checkpoints),
            ("data.prefetch", self.data.prefetch),
            ("output.samples_per_class", self.output.samples_per_class),
        ];
        for (key, v) in positive_i {
            if v <= 0 {
                return Err(invalid(&[key], format!("key `{key}` must be > 0, got {v}")));
            }
        }
        if self.eval.enabled {
            for (key, v) in [
                ("eval.num_samples", self.eval.num_samples),
                ("eval.batch", self.eval.batch),
            ] {
                if v <= 0 {
                    return Err(invalid(&[key], format!("key `{key}` must be > 0, got {v}")));
                }
            }
            let splits = super::IS_SPLITS as i64;
            if self.eval.num_samples < splits {
                return Err(invalid(
                    &["eval.num_samples"],
                    format!(
                        "key `eval.num_samples` must be >= {splits} (the Inception Score splits \
                         the samples into {splits} parts), got {}",
                        self.eval.num_samples
                    ),
                ));
            }
            self.validate_kid_and_pr()?;
        }
        let non_negative_i = [
            ("eval.every", self.eval.every),
            ("train.ema_start", t.ema_start),
            ("train.sample_every", t.sample_every),
            ("train.threads", t.threads),
            ("train.checkpoint_every", t.checkpoint_every),
            ("dist.sync_check_every", self.dist.sync_check_every),
            ("output.sample_classes", self.output.sample_classes),
            ("data.workers", self.data.workers),
            ("data.max_images", self.data.max_images),
        ];
        for (key, v) in non_negative_i {
            if v < 0 {
                return Err(invalid(
                    &[key],
                    format!("key `{key}` must be >= 0, got {v}"),
                ));
            }
        }
        Ok(())
    }

    fn validate_augment(&self) -> std::result::Result<(), Invalid> {
        let policy = &self.train.augment_policy;
        let names: Vec<&str> = policy
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = names.iter().find(|n| !super::AUGMENT_OPS.contains(n)) {
            return Err(invalid(
                &["train.augment_policy"],
                format!(
                    "key `train.augment_policy` names an unknown transform \"{bad}\"; the \
                     transforms are {} (comma-separated)",
                    super::AUGMENT_OPS.join(", ")
                ),
            ));
        }
        if self.train.augment == super::Augment::Diffaugment && names.is_empty() {
            return Err(invalid(
                &["train.augment_policy", "train.augment"],
                "train.augment = \"diffaugment\" needs at least one transform in \
                 `train.augment_policy`"
                    .to_string(),
            ));
        }
        Ok(())
    }

    /// KID's subsets come out of the generated samples, and a k-NN ball needs k other samples.
    fn validate_kid_and_pr(&self) -> std::result::Result<(), Invalid> {
        let e = &self.eval;
        if e.kid && e.kid_subsets < 1 {
            return Err(invalid(
                &["eval.kid_subsets"],
                format!("key `eval.kid_subsets` must be > 0, got {}", e.kid_subsets),
            ));
        }
        if e.kid && !(2..=e.num_samples).contains(&e.kid_subset_size) {
            return Err(invalid(
                &["eval.kid_subset_size", "eval.num_samples"],
                format!(
                    "key `eval.kid_subset_size` must be from 2 to eval.num_samples ({}), got {}",
                    e.num_samples, e.kid_subset_size
                ),
            ));
        }
        if e.precision_recall && !(1..e.num_samples).contains(&e.pr_k) {
            return Err(invalid(
                &["eval.pr_k", "eval.num_samples"],
                format!(
                    "key `eval.pr_k` must be from 1 to eval.num_samples - 1 ({}), got {}",
                    e.num_samples - 1,
                    e.pr_k
                ),
            ));
        }
        Ok(())
    }

    fn validate_rates(&self) -> std::result::Result<(), Invalid> {
        let m = &self.model;
        let t = &self.train;
        let positive_f = [
            ("train.lr_g", t.lr_g),
            ("train.lr_d", t.lr_d),
            ("train.adam_eps", t.adam_eps),
            ("model.sn_eps", m.sn_eps),
            ("model.bn_eps", m.bn_eps),
            ("dist.timeout_s", self.dist.timeout_s),
        ];
        for (key, v) in positive_f {
            if !(v > 0.0 && v.is_finite()) {
                return Err(invalid(
                    &[key],
                    format!("key `{key}` must be a finite number > 0, got {v}"),
                ));
            }
        }
        let unit = [
            ("train.beta1", t.beta1),
            ("train.beta2", t.beta2),
            ("train.ema_decay", t.ema_decay),
            ("model.bn_momentum", m.bn_momentum),
        ];
        for (key, v) in unit {
            if !(0.0..1.0).contains(&v) {
                return Err(invalid(
                    &[key],
                    format!("key `{key}` must be in [0, 1), got {v}"),
                ));
            }
        }
        if !(self.dist.bucket_mb >= 0.0 && self.dist.bucket_mb.is_finite()) {
            return Err(invalid(
                &["dist.bucket_mb"],
                format!(
                    "key `dist.bucket_mb` must be >= 0, got {}",
                    self.dist.bucket_mb
                ),
            ));
        }
        Ok(())
    }

    fn validate_architecture(&self) -> std::result::Result<(), Invalid> {
        let m = &self.model;
        if m.g_ch % 8 != 0 || m.d_ch % 8 != 0 {
            return Err(invalid(
                &["model.g_ch", "model.d_ch"],
                format!(
                    "keys `model.g_ch` and `model.d_ch` must be multiples of 8 (attention uses C/8 channels), got {} and {}",
                    m.g_ch, m.d_ch
                ),
            ));
        }
        let arch = Arch::for_resolution(m.resolution).ok_or_else(|| {
            invalid(
                &["model.resolution"],
                format!(
                    "key `model.resolution`: no architecture for {}; available: {:?}",
                    m.resolution,
                    Arch::resolutions()
                ),
            )
        })?;
        for (key, wanted, available) in [
            ("model.g_attn_res", &m.g_attn_res, arch.g_resolutions()),
            ("model.d_attn_res", &m.d_attn_res, arch.d_resolutions()),
        ] {
            // Either key can be the one that is wrong: the resolution picks the feature-map sizes.
            let keys = [key, "model.resolution"];
            for r in wanted {
                if !available.contains(r) {
                    return Err(invalid(&keys, format!(
                        "key `{key}`: the {}x{} architecture has no {r}x{r} feature map; available: {available:?}",
                        m.resolution, m.resolution
                    )));
                }
                let blocks: Vec<usize> = (0..available.len())
                    .filter(|&i| available[i] == *r)
                    .collect();
                if blocks.len() > 1 {
                    return Err(invalid(&keys, format!(
                        "key `{key}`: {r}x{r} is the feature-map size after blocks {blocks:?} of the {}x{} architecture, so it does not say where one attention block goes; the sizes after its blocks are {available:?} (choose a size that occurs once)",
                        m.resolution, m.resolution
                    )));
                }
                if m.attention == AttentionKind::Official && r % 2 != 0 {
                    return Err(invalid(&[key, "model.attention"], format!("key `{key}`: official attention max-pools 2x2, needs an even resolution, got {r}")));
                }
            }
        }
        Ok(())
    }

    /// Per-rank batch for `world_size` ranks; the global batch must split evenly.
    pub fn batch_per_rank(&self, world_size: i64) -> Result<i64> {
        let b = self.train.batch_size;
        if b % world_size != 0 {
            return Err(Error::Config {
                file: "<run>".into(),
                msg: format!(
                    "key `train.batch_size` = {b} is not divisible by the {world_size} ranks of this run"
                ),
            });
        }
        Ok(b / world_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        let c = Config::from_toml_str("", "<empty>", &[]).unwrap();
        assert_eq!(c, Config::default());
    }
}
