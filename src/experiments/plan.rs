//! A sweep's runs: the grid's arms times the seeds, each an ordinary run directory
//! (`<out>/<arm>/seed<S>`), recorded in `<out>/sweep.json` so that a sweep started again finds
//! the same runs, and `sagan compare` the arms.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::grid::Grid;
use crate::config::Config;
use crate::error::{Error, IoContext, Result};

/// The manifest's file name in a sweep directory.
pub const MANIFEST: &str = "sweep.json";

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// `<arm>/seed<S>`, also its directory under the sweep's.
    pub name: String,
    pub arm: String,
    pub seed: i64,
    pub dir: PathBuf,
    /// Everything `sagan train --config <base>` is given with --set: the sweep's own overrides,
    /// the arm's, then `train.seed` and `output.dir`.
    pub sets: Vec<String>,
    pub steps: i64,
}

/// The expansion of a base config, a grid and seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The base config, absolute.
    pub base: PathBuf,
    pub grid: PathBuf,
    pub arms: Vec<String>,
    pub seeds: Vec<i64>,
    pub runs: Vec<PlannedRun>,
}

/// How far a run has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    NotStarted,
    /// Checkpointed at this step; `--resume` continues it.
    Checkpointed(i64),
    /// summary.json says every step is done.
    Finished,
}

impl Plan {
    /// Expands the grid with `seeds` seeds (the base config's train.seed, then the next ones), in
    /// the order they run: the first seed of every arm, then the second.
    /// Every run's config is loaded here, so a bad key fails before anything trains.
    pub fn new(
        base: &Path,
        grid_path: &Path,
        seeds: usize,
        sets: &[String],
        out: &Path,
    ) -> Result<Self> {
        if seeds == 0 {
            return Err(Error::Sweep("--seeds must be at least 1".into()));
        }
        let grid = Grid::load(grid_path)?;
        let base = base.canonicalize().at(base)?;
        let base_cfg = Config::load(&base, sets)?;
        let out = absolute(out)?;
        let seed_list: Vec<i64> = (0..seeds as i64).map(|k| base_cfg.train.seed + k).collect();
        let arms = grid.expand();
        let mut runs = Vec::new();
        // Seed by seed, every arm each time: a sweep cut short has the same seeds of every arm.
        for &seed in &seed_list {
            for arm in &arms {
                let name = format!("{}/seed{seed}", arm.name);
                let dir = out.join(&arm.name).join(format!("seed{seed}"));
                let mut all: Vec<String> = sets.to_vec();
                all.extend(arm.sets.iter().cloned());
                all.push(format!("train.seed={seed}"));
                all.push(format!(
                    "output.dir={}",
                    toml::Value::String(dir.display().to_string())
                ));
                let cfg = Config::load(&base, &all).map_err(|e| {
                    Error::Sweep(format!(
                        "arm `{}` (grid {}): {e}",
                        arm.name,
                        grid_path.display()
                    ))
                })?;
                runs.push(PlannedRun {
                    name,
                    arm: arm.name.clone(),
                    seed,
                    dir,
                    sets: all,
                    steps: cfg.train.steps,
                });
            }
        }
        Ok(Self {
            base,
            grid: absolute(grid_path)?,
            arms: arms.into_iter().map(|a| a.name).collect(),
            seeds: seed_list,
            runs,
        })
    }

    /// Records the plan in `out`, or checks that the one recorded there is the same: a sweep
    /// directory holds one sweep.
    pub fn record(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).at(out)?;
        let path = out.join(MANIFEST);
        if let Some(old) = Self::read(out)? {
            if old.runs != self.runs {
                let names = |p: &Plan| p.runs.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
                return Err(Error::Sweep(format!(
                    "{} records another sweep (base {}, runs {:?}); this one is base {}, runs {:?}. \
                     Give another --out, or delete that directory",
                    path.display(),
                    old.base.display(),
                    names(&old),
                    self.base.display(),
                    names(self)
                )));
            }
            return Ok(());
        }
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_string_pretty(self).expect("serialisable");
        std::fs::write(&tmp, json).at(&tmp)?;
        std::fs::rename(&tmp, &path).at(&path)
    }

    /// The plan recorded in `dir`, if it is a sweep directory.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MANIFEST);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Sweep(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(path),
        }
    }
}

impl Plan {
    /// What `sagan train` is given for run `r`, here and in a job array's task alike (both add
    /// `--resume`).
    pub fn train_args(&self, r: &PlannedRun) -> Vec<String> {
        let mut a = vec!["--config".to_string(), self.base.display().to_string()];
        for s in &r.sets {
            a.push("--set".into());
            a.push(s.clone());
        }
        a
    }
}

impl PlannedRun {
    pub fn state(&self) -> RunState {
        let summary_steps = std::fs::read_to_string(self.dir.join("summary.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["steps"].as_i64());
        if summary_steps.is_some_and(|s| s >= self.steps) {
            return RunState::Finished;
        }
        match crate::train::run_dir::inspect(&self.dir).checkpointed_step {
            Some(step) => RunState::Checkpointed(step),
            None => RunState::NotStarted,
        }
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().at(".")?;
    Ok(crate::config::join_path(&cwd, p))
}
