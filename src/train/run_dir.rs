//! The run directory holds one run's outputs, never a mix of two runs: training into a directory
//! that holds a run needs `--resume` (continue it) or `--overwrite` (delete its outputs first).
use std::path::{Path, PathBuf};

use crate::checkpoint::store;
use crate::error::{Error, IoContext, Result};

/// How `sagan train` was asked to treat the run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartMode {
    /// A new run; the directory must not hold one.
    Fresh,
    /// Continue from a checkpoint: the newest in the run directory (None), or the given
    /// checkpoint, checkpoints directory or run directory. Starts fresh when there is none.
    Resume(Option<PathBuf>),
    /// Delete the directory's run outputs, then start a new run.
    Overwrite,
}

/// sagan's outputs in a run directory (anything else there is left alone).
fn is_output(name: &str) -> bool {
    const FILES: &[&str] = &[
        "config.toml",
        "metrics.jsonl",
        "summary.json",
        "G.safetensors",
        "D.safetensors",
        "G_ema.safetensors",
        "checkpoints",
        "rank_state",
    ];
    FILES.contains(&name)
        || name.starts_with("events.out.tfevents.")
        || (name.ends_with(".png")
            && (name.starts_with("samples") || name.starts_with("attention_")))
}

/// The run outputs found in `dir`, sorted (empty when it holds no run).
pub fn outputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| is_output(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        // An empty directory (a mount point made for checkpoints, say) holds no run.
        .filter(|p| !p.is_dir() || std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some()))
        .collect();
    found.sort();
    found
}

/// Deletes the run outputs in `dir`; returns how many entries went.
pub fn clear(dir: &Path) -> Result<usize> {
    let found = outputs(dir);
    for p in &found {
        if p.is_dir() {
            // Empty it first: the directory itself may be a mount point, which stays.
            for e in std::fs::read_dir(p).at(p)?.filter_map(|e| e.ok()) {
                let q = e.path();
                if q.is_dir() {
                    std::fs::remove_dir_all(&q).at(&q)?;
                } else {
                    std::fs::remove_file(&q).at(&q)?;
                }
            }
            let _ = std::fs::remove_dir(p);
        } else {
            std::fs::remove_file(p).at(p)?;
        }
    }
    Ok(found.len())
}

/// What a run directory holds, read once at start-up; the start decision is made from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub dir: PathBuf,
    /// sagan's outputs in it, sorted (none: it holds no run).
    pub outputs: Vec<PathBuf>,
    /// The step of the checkpoint `latest` names, when its state reads.
    pub checkpointed_step: Option<i64>,
    /// The highest step metrics.jsonl logged.
    pub logged_step: Option<i64>,
}

/// Reads what `dir` holds: its run outputs and, when there are any, how far that run got.
pub fn inspect(dir: &Path) -> Contents {
    let outputs = outputs(dir);
    let (mut checkpointed_step, mut logged_step) = (None, None);
    if !outputs.is_empty() {
        let root = store::checkpoints_dir(dir);
        checkpointed_step = store::read_latest_name(&root)
            .and_then(|n| store::read_state(&root.join(n)).ok())
            .map(|state| state.step);
        logged_step = std::fs::read_to_string(dir.join("metrics.jsonl"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|v| v["step"].as_i64())
                    .max()
            });
    }
    Contents {
        dir: dir.to_path_buf(),
        outputs,
        checkpointed_step,
        logged_step,
    }
}

impl Contents {
    pub fn holds_run(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// One line saying what run the directory holds.
    fn describe(&self) -> String {
        match (self.checkpointed_step, self.logged_step) {
            (Some(step), _) => format!("a run checkpointed at step {step}"),
            (None, Some(step)) => format!("a run that logged up to step {step} (no checkpoint)"),
            (None, None) => "the outputs of a run".to_string(),
        }
    }

    /// Refuses a fresh start where the directory holds a run, saying how to go on.
    pub fn check_fresh(&self) -> Result<()> {
        if !self.holds_run() {
            return Ok(());
        }
        let names: Vec<String> = self
            .outputs
            .iter()
            .take(4)
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        Err(Error::Train(format!(
            "output.dir {} already holds {} ({}{}); add --resume to continue it, --overwrite to \
             delete its outputs and start over, or set output.dir to another directory",
            self.dir.display(),
            self.describe(),
            names.join(", "),
            if self.outputs.len() > 4 { ", ..." } else { "" }
        )))
    }
}

/// The checkpoints directory to resume from for `--resume [PATH]` with run directory `run_dir`,
/// and, when PATH names one checkpoint, that checkpoint.
pub fn resume_source(run_dir: &Path, path: Option<&Path>) -> (PathBuf, Option<PathBuf>) {
    match path {
        None => (store::checkpoints_dir(run_dir), None),
        Some(p) if p.join(store::STATE_FILE).exists() => (
            p.parent().map(Path::to_path_buf).unwrap_or_default(),
            Some(p.to_path_buf()),
        ),
        Some(p)
            if p.join(store::LATEST).exists() || p.file_name() == Some("checkpoints".as_ref()) =>
        {
            (p.to_path_buf(), None)
        }
        Some(p) => (store::checkpoints_dir(p), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_directory_is_recognised_and_cleared_without_touching_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        inspect(d).check_fresh().unwrap();
        std::fs::write(d.join("notes.txt"), "mine").unwrap();
        inspect(d).check_fresh().unwrap();
        std::fs::write(d.join("metrics.jsonl"), "{\"step\": 50}\n{\"step\": 100}\n").unwrap();
        std::fs::write(d.join("events.out.tfevents.1.host.2.sagan"), "").unwrap();
        std::fs::write(d.join("samples_000050.png"), "").unwrap();
        let e = inspect(d).check_fresh().unwrap_err().to_string();
        assert!(
            e.contains("logged up to step 100")
                && e.contains("--resume")
                && e.contains("--overwrite"),
            "{e}"
        );
        assert_eq!(clear(d).unwrap(), 3);
        assert!(d.join("notes.txt").exists());
        assert!(!inspect(d).holds_run());
    }
}
