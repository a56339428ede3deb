//! A sweep's grid file: named arms and crossed values, expanded into the arms a sweep runs.
//!
//! ```toml
//! # Each [[arm]] is a name and the overrides that make it (the base config's own values
//! # otherwise). Arms are crossed with every combination of the [cross] values.
//! [[arm]]
//! name = "attn-none"
//! set = { "model.g_attn_res" = [], "model.d_attn_res" = [] }
//!
//! [cross]
//! "train.lr_g" = [2e-4, 8e-4]
//! ```
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// One arm: a name and its `--set` overrides, in the order the grid file gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    pub name: String,
    pub sets: Vec<String>,
}

/// A parsed grid file.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    arms: Vec<Arm>,
    cross: Vec<(String, Vec<toml::Value>)>,
}

impl Grid {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// From TOML text; `origin` names the source in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let bad = |msg: String| Error::Config {
            file: origin.to_string(),
            msg,
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| bad(e.to_string()))?;
        if let Some(k) = table.keys().find(|k| *k != "arm" && *k != "cross") {
            return Err(bad(format!(
                "unknown key `{k}`: a grid has [[arm]] tables (name, set) and a [cross] table"
            )));
        }
        let arms = match table.get("arm") {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_arm(item).map_err(|m| bad(format!("arm {}: {m}", i + 1))))
                .collect::<Result<_>>()?,
            Some(_) => return Err(bad("`arm` must be an array of tables: [[arm]]".into())),
        };
        let cross = match table.get("cross") {
            None => Vec::new(),
            Some(toml::Value::Table(t)) => t
                .iter()
                .map(|(key, values)| {
                    parse_cross(key, values).map_err(|m| bad(format!("cross: {m}")))
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(bad("`cross` must be a table: [cross]".into())),
        };
        let grid = Self { arms, cross };
        if grid.arms.is_empty() && grid.cross.is_empty() {
            return Err(bad("nothing to sweep: no [[arm]] and no [cross]".into()));
        }
        let expanded = grid.expand();
        for (i, a) in expanded.iter().enumerate() {
            if expanded[..i].iter().any(|b| b.name == a.name) {
                return Err(bad(format!("two arms are named `{}`", a.name)));
            }
        }
        Ok(grid)
    }

    /// Every arm crossed with every combination of the [cross] values (the first key varies
    /// slowest), named `<arm>+<key>=<value>...`.
    pub fn expand(&self) -> Vec<Arm> {
        let base = if self.arms.is_empty() {
            vec![Arm {
                name: String::new(),
                sets: Vec::new(),
            }]
        } else {
            self.arms.clone()
        };
        let mut out = base;
        for (key, values) in &self.cross {
            let short = key.rsplit('.').next().unwrap_or(key);
            out = out
                .iter()
                .flat_map(|arm| {
                    values.iter().map(move |v| {
                        let part = format!("{short}={}", value_name(v));
                        let name = if arm.name.is_empty() {
                            part
                        } else {
                            format!("{}+{part}", arm.name)
                        };
                        let mut sets = arm.sets.clone();
                        sets.push(format!("{key}={v}"));
                        Arm { name, sets }
                    })
                })
                .collect();
        }
        out
    }
}

fn parse_arm(item: &toml::Value) -> std::result::Result<Arm, String> {
    let t = item
        .as_table()
        .ok_or("expected a table with `name` and `set`")?;
    if let Some(k) = t.keys().find(|k| *k != "name" && *k != "set") {
        return Err(format!("unknown key `{k}` (an arm has `name` and `set`)"));
    }
    let name = t
        .get("name")
        .and_then(toml::Value::as_str)
        .ok_or("`name` (a string) is missing")?;
    check_name(name)?;
    let sets = match t.get("set") {
        None => Vec::new(),
        Some(toml::Value::Table(s)) => s
            .iter()
            .map(|(k, v)| check_key(k).map(|_| format!("{k}={v}")))
            .collect::<std::result::Result<_, _>>()
            .map_err(|m| format!("`{name}`: {m}"))?,
        Some(_) => {
            return Err(format!(
                "`{name}`: `set` must be a table of \"section.key\" = value"
            ))
        }
    };
    Ok(Arm {
        name: name.to_string(),
        sets,
    })
}

fn parse_cross(
    key: &str,
    values: &toml::Value,
) -> std::result::Result<(String, Vec<toml::Value>), String> {
    check_key(key)?;
    match values {
        toml::Value::Array(v) if !v.is_empty() => Ok((key.to_string(), v.clone())),
        _ => Err(format!(
            "`{key}` must be a non-empty array of the values to cross"
        )),
    }
}

/// Arm names become directory names and sbatch job names.
fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+=".contains(c));
    ok.then_some(()).ok_or_else(|| {
        format!("name `{name}`: use letters, digits and - _ . + = (it names the arm's directory)")
    })
}

fn check_key(key: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{key}` is not a \"section.key\" name"));
    }
    if key == "train.seed" || key == "output.dir" {
        return Err(format!(
            "`{key}` is the sweep's to set (--seeds, --out), not an arm's"
        ));
    }
    Ok(())
}

/// A value as it reads in an arm name: `[8, 16]` as `8-16`, `[]` as `none`.
fn value_name(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) if a.is_empty() => "none".into(),
        toml::Value::Array(a) => a.iter().map(value_name).collect::<Vec<_>>().join("-"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_cross_with_values_in_order() {
        let g = Grid::parse(
            r#"
[[arm]]
name = "a"
set = { "model.g_attn_res" = [], "model.d_attn_res" = [] }
[[arm]]
name = "b"
[cross]
"train.lr_g" = [2e-4, 8e-4]
"model.attention" = ["paper"]
"#,
            "g.toml",
        )
        .unwrap();
        let arms = g.expand();
        let names: Vec<&str> = arms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "a+attention=paper+lr_g=0.0002",
                "a+attention=paper+lr_g=0.0008",
                "b+attention=paper+lr_g=0.0002",
                "b+attention=paper+lr_g=0.0008",
            ]
        );
        assert_eq!(
            arms[1].sets,
            [
                "model.d_attn_res=[]",
                "model.g_attn_res=[]",
                "model.attention=\"paper\"",
                "train.lr_g=0.0008"
            ]
        );
    }

    #[test]
    fn cross_alone_names_arms_by_value() {
        let g = Grid::parse("[cross]\n\"model.g_attn_res\" = [[], [8, 16]]\n", "g").unwrap();
        let names: Vec<String> = g.expand().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["g_attn_res=none", "g_attn_res=8-16"]);
    }

    #[test]
    fn bad_grids_say_what_is_wrong() {
        for (text, expect) in [
            ("", "nothing to sweep"),
            ("[[arm]]\nset = {}\n", "arm 1: `name`"),
            ("[[arm]]\nname = \"a/b\"\n", "name `a/b`"),
            (
                "[[arm]]\nname = \"a\"\n[[arm]]\nname = \"a\"\n",
                "two arms are named `a`",
            ),
            ("[cross]\n\"train.lr_g\" = []\n", "non-empty array"),
            ("[cross]\nlr = [1]\n", "not a \"section.key\""),
            ("[cross]\n\"train.seed\" = [1, 2]\n", "--seeds"),
            ("[arms]\n", "unknown key `arms`"),
            ("[[arm]]\nname = \"a\"\nsets = {}\n", "unknown key `sets`"),
        ] {
            let e = Grid::parse(text, "grid.toml").unwrap_err().to_string();
            assert!(e.starts_with("config grid.toml: "), "{e}");
            assert!(e.contains(expect), "{text:?}: {e}");
        }
    }
}
