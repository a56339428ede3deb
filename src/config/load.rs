//! Loading a config: TOML text, `--set section.key=value` overrides (an error about a key an
//! override decided blames the override), relative paths made absolute, and the stable hash that
//! ranks compare.
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Config;
use crate::error::{Error, IoContext, Result};

/// The keys that hold paths. A relative path written in a config file (or a relative default the
/// file leaves in place) is relative to the directory of that file; one given with `--set`, to
/// the current directory. Both are made absolute when the config is loaded, so the effective
/// config (and the run's config.toml) means the same from anywhere.
pub const PATH_KEYS: [&str; 5] = [
    "data.path",
    "data.cache_dir",
    "eval.weights",
    "eval.reference_stats",
    "output.dir",
];

/// Whether an override of `set_key` decides `key`: the same key, a section above it, or a key
/// inside it (an override of a whole section).
fn overrides_key(set_key: &str, key: &str) -> bool {
    set_key == key
        || key
            .strip_prefix(set_key)
            .is_some_and(|r| r.starts_with('.'))
        || set_key
            .strip_prefix(key)
            .is_some_and(|r| r.starts_with('.'))
}

/// `rel` joined to `anchor`, an absolute path without symbolic links (a canonical directory, or
/// the current directory as the kernel reports it). Leading `..` are folded into the anchor, which
/// is exact because the anchor has no links; any later ones are left for the OS to resolve.
pub fn join_path(anchor: &Path, rel: &Path) -> PathBuf {
    let mut out = anchor.to_path_buf();
    let mut parts = rel.components().peekable();
    while let Some(c) = parts.peek() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            _ => break,
        }
        parts.next();
    }
    out.extend(parts);
    out
}

/// The directory a config file's relative paths are relative to, without symbolic links.
fn config_dir(path: &Path) -> Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    dir.canonicalize().at(dir)
}

impl Config {
    /// Reads `path`, applies `overrides` ("section.key=value"), deserialises, resolves relative
    /// paths (see [`PATH_KEYS`]) and validates. Errors name the file, or the override at fault.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        let base = config_dir(path)?;
        Self::parse(&text, &path.display().to_string(), Some(&base), overrides)
    }

    /// From TOML text without a file: `origin` names the source in error messages (e.g.
    /// "<defaults>"), and relative paths not given by an override stay relative.
    pub fn from_toml_str(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        Self::parse(text, origin, None, overrides)
    }

    fn parse(text: &str, origin: &str, base: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Config {
            file: origin.to_string(),
            msg: e.to_string(),
        })?;
        let mut set = Vec::new();
        for o in overrides {
            let key = apply_override(&mut table, o).map_err(|msg| Error::Override {
                spec: o.clone(),
                msg,
            })?;
            set.push((key, o.clone()));
        }
        // An error about a key that an override decided is that override's, not the file's.
        let blame = |keys: &[&str], msg: String| match set
            .iter()
            .rev()
            .find(|(k, _)| keys.iter().any(|key| overrides_key(k, key)))
        {
            Some((_, spec)) => Error::Override {
                spec: spec.clone(),
                msg,
            },
            None => Error::Config {
                file: origin.to_string(),
                msg,
            },
        };
        let mut cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                blame(&[key.as_str()], format!("key `{key}`: {}", e.into_inner()))
            })?;
        let from_set = |key: &str| set.iter().any(|(k, _)| overrides_key(k, key));
        cfg.resolve_paths(base, &from_set)?;
        cfg.validate().map_err(|e| blame(&e.keys, e.msg))?;
        Ok(cfg)
    }

    /// The path-valued keys and their values (see [`PATH_KEYS`]).
    fn paths_mut(&mut self) -> [(&'static str, &mut PathBuf); 5] {
        [
            (PATH_KEYS[0], &mut self.data.path),
            (PATH_KEYS[1], &mut self.data.cache_dir),
            (PATH_KEYS[2], &mut self.eval.weights),
            (PATH_KEYS[3], &mut self.eval.reference_stats),
            (PATH_KEYS[4], &mut self.output.dir),
        ]
    }

    /// Makes relative paths absolute: an override's against the current directory, the file's
    /// (and defaults') against `base`, the file's directory (left relative without one). An empty
    /// path means "not set" and stays empty.
    fn resolve_paths(
        &mut self,
        base: Option<&Path>,
        from_set: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        let mut cwd = None;
        for (key, value) in self.paths_mut() {
            if value.as_os_str().is_empty() || value.is_absolute() {
                continue;
            }
            let anchor = if from_set(key) {
                if cwd.is_none() {
                    cwd = Some(std::env::current_dir().at(".")?);
                }
                cwd.as_deref()
            } else {
                base
            };
            if let Some(anchor) = anchor {
                *value = join_path(anchor, value);
            }
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config always serialises")
    }

    /// Hash of the canonical serialisation: equal on every rank iff the effective configs are equal.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.to_toml().as_bytes()).into()
    }
}

/// Sets the value `spec` ("section.key=value") names in `table`; returns the key.
fn apply_override(table: &mut toml::Table, spec: &str) -> std::result::Result<String, String> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| "expected section.key=value".to_string())?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("bad key `{key}`"));
    }
    // A bare word that is not valid TOML (a path, a name) is taken as a string.
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, sections) = parts.split_last().expect("non-empty");
    let mut cur = table;
    for s in sections {
        cur = cur
            .entry(s.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{s}` is not a section"))?;
    }
    cur.insert(last.to_string(), value);
    Ok(parts.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn override_sets_nested_values() {
        let c = Config::from_toml_str(
            "",
            "x",
            &[
                "train.lr_d=0.001".into(),
                "output.dir=/tmp/a b".into(),
                "model.g_attn_res=[8]".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.train.lr_d, 0.001);
        assert_eq!(c.output.dir, PathBuf::from("/tmp/a b"));
        assert_eq!(c.model.g_attn_res, vec![8]);
    }

    #[test]
    fn relative_paths_follow_their_source() {
        let base = Path::new("/base/configs");
        assert_eq!(
            join_path(base, Path::new("../runs/x")),
            PathBuf::from("/base/runs/x")
        );
        assert_eq!(
            join_path(base, Path::new("./a/../b")),
            PathBuf::from("/base/configs/a/../b")
        );
        let text = "[output]\ndir = \"out\"\n[eval]\nweights = \"../w.st\"\n";
        let cfg = Config::parse(text, "f", Some(base), &["data.path=d".into()]).unwrap();
        assert_eq!(cfg.output.dir, PathBuf::from("/base/configs/out"));
        assert_eq!(cfg.eval.weights, PathBuf::from("/base/w.st"));
        assert_eq!(cfg.data.path, std::env::current_dir().unwrap().join("d"));
        assert_eq!(
            cfg.eval.reference_stats,
            PathBuf::new(),
            "empty means unset"
        );
        // A default the file leaves in place is the file's too; absolute paths stay as they are.
        let cfg = Config::parse("", "f", Some(base), &[]).unwrap();
        assert_eq!(cfg.output.dir, PathBuf::from("/base/configs/runs/sagan"));
        assert_eq!(cfg.data.path, Config::default().data.path);
    }

    #[test]
    fn an_override_is_blamed_for_the_keys_it_sets() {
        assert!(overrides_key("train.steps", "train.steps"));
        assert!(overrides_key("train", "train.steps"));
        assert!(overrides_key("train.steps", "train"));
        assert!(!overrides_key("train.step", "train.steps"));
        let e = Config::from_toml_str("[train]\nsteps = 5\n", "f.toml", &["train.lr_g=-1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--set train.lr_g=-1: key `train.lr_g`"),
            "{e}"
        );
        let e = Config::from_toml_str("[train]\nsteps = -5\n", "f.toml", &["train.lr_g=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config f.toml: key `train.steps`"), "{e}");
    }

    #[test]
    fn hash_tracks_content() {
        let a = Config::default();
        let mut b = Config::default();
        assert_eq!(a.hash(), b.hash());
        b.train.seed = 1;
        assert_ne!(a.hash(), b.hash());
    }
}
