//! What one finished (or unfinished) run directory says about its G_ema: the evaluations in
//! metrics.jsonl, the end scores in summary.json, and the resolved config.toml it was trained with.
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// G_ema's scores at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub step: i64,
    pub fid: f64,
    pub is: f64,
    pub class_accuracy: Option<f64>,
}

/// One run as the comparison sees it.
#[derive(Debug, Clone)]
pub struct RunResults {
    pub dir: PathBuf,
    /// config.toml, without the keys that differ between the seeds of one arm.
    pub config: toml::Table,
    pub seed: i64,
    /// summary.json exists: every step was trained.
    pub finished: bool,
    /// G_ema's evaluations, by step.
    pub curve: Vec<Point>,
    /// The end scores (summary.json), when finished and evaluated.
    pub end: Option<Point>,
    /// The feature network the scores are named for (`fmnist_classifier`).
    pub feature_net: Option<String>,
}

/// Keys that differ between the seeds of one arm by construction.
const PER_SEED_KEYS: [(&str, &str); 2] = [("train", "seed"), ("output", "dir")];

impl RunResults {
    pub fn read(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.toml");
        let text = std::fs::read_to_string(&cfg_path).at(&cfg_path)?;
        let mut config: toml::Table = text
            .parse()
            .map_err(|e| Error::Compare(format!("{}: {e}", cfg_path.display())))?;
        let seed = config
            .get("train")
            .and_then(|t| t.get("seed"))
            .and_then(toml::Value::as_integer)
            .ok_or_else(|| Error::Compare(format!("{}: no train.seed", cfg_path.display())))?;
        for (section, key) in PER_SEED_KEYS {
            if let Some(t) = config.get_mut(section).and_then(toml::Value::as_table_mut) {
                t.remove(key);
            }
        }
        let metrics = dir.join("metrics.jsonl");
        let mut curve = Vec::new();
        let mut feature_net = None;
        if let Ok(text) = std::fs::read_to_string(&metrics) {
            for (n, line) in text.lines().enumerate() {
                let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                    Error::Compare(format!("{} line {}: {e}", metrics.display(), n + 1))
                })?;
                if v["network"] == "G_ema" && v["eval"].is_object() {
                    if let Some(p) = point(v["step"].as_i64(), &v["eval"]) {
                        curve.push(p);
                    }
                    feature_net = v["feature_net"].as_str().map(str::to_string);
                }
            }
        }
        curve.sort_by_key(|p| p.step);
        let summary_path = dir.join("summary.json");
        let summary: Option<serde_json::Value> = match std::fs::read_to_string(&summary_path) {
            Ok(t) => Some(
                serde_json::from_str(&t)
                    .map_err(|e| Error::Compare(format!("{}: {e}", summary_path.display())))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).at(summary_path),
        };
        let end = summary.as_ref().and_then(|s| {
            let label = s["feature_net"].as_str()?;
            let g = &s["scores_end"]["G_ema"];
            Some(Point {
                step: s["steps"].as_i64()?,
                fid: g[format!("FID_{label}")].as_f64()?,
                is: g[format!("IS_{label}")].as_f64()?,
                class_accuracy: g["class_accuracy"].as_f64(),
            })
        });
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            seed,
            finished: summary.is_some(),
            curve,
            end,
            feature_net,
        })
    }

    /// The evaluation with the lowest FID (the end's included).
    pub fn best(&self) -> Option<Point> {
        self.curve
            .iter()
            .chain(self.end.iter())
            .copied()
            .min_by(|a, b| a.fid.total_cmp(&b.fid))
    }
}

fn point(step: Option<i64>, eval: &serde_json::Value) -> Option<Point> {
    Some(Point {
        step: step?,
        fid: eval["fid"].as_f64()?,
        is: eval["is_mean"].as_f64()?,
        class_accuracy: eval["class_accuracy"].as_f64(),
    })
}

/// The run directories under `dirs`, in order: a run directory itself (it has config.toml), a
/// sweep directory's runs in its own order, or the run directories found below (three levels at
/// most, sorted by path).
pub fn find_runs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !d.is_dir() {
            return Err(Error::Compare(format!(
                "{}: no such directory",
                d.display()
            )));
        }
        let found = if d.join("config.toml").is_file() {
            vec![d.clone()]
        } else if let Some(plan) = super::plan::Plan::read(d)? {
            plan.runs
                .into_iter()
                .map(|r| r.dir)
                .filter(|r| r.join("config.toml").is_file())
                .collect()
        } else {
            let mut v = Vec::new();
            search(d, 3, &mut v)?;
            v.sort();
            v
        };
        if found.is_empty() {
            return Err(Error::Compare(format!(
                "{}: no run directories (none with a config.toml) in or below it",
                d.display()
            )));
        }
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

fn search(d: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    if d.join("config.toml").is_file() {
        out.push(d.to_path_buf());
        return Ok(());
    }
    if depth == 0 {
        return Ok(());
    }
    for entry in std::fs::read_dir(d).at(d)? {
        let p = entry.at(d)?.path();
        if p.is_dir() {
            search(&p, depth - 1, out)?;
        }
    }
    Ok(())
}
