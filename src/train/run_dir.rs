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
        .collect();
    found.sort();
    found
}

/// Deletes the run outputs in `dir`; returns how many entries went.
pub fn clear(dir: &Path) -> Result<usize> {
    let found = outputs(dir);
    for p in &found {
        if p.is_dir() {
            std::fs::remove_dir_all(p).at(p)?;
        } else {
            std::fs::remove_file(p).at(p)?;
        }
    }
    Ok(found.len())
}

/// One line saying what run `dir` holds: its step from the newest checkpoint or metrics.jsonl.
fn describe(dir: &Path) -> String {
    let root = store::checkpoints_dir(dir);
    if let Some(state) =
        store::read_latest_name(&root).and_then(|n| store::read_state(&root.join(n)).ok())
    {
        return format!("a run checkpointed at step {}", state.step);
    }
    let logged = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .ok()
        .and_then(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["step"].as_i64())
                .max()
        });
    match logged {
        Some(step) => format!("a run that logged up to step {step} (no checkpoint)"),
        None => "the outputs of a run".to_string(),
    }
}

/// Refuses a fresh start in a directory that holds a run, saying how to go on.
pub fn check_fresh(dir: &Path) -> Result<()> {
    let found = outputs(dir);
    if found.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = found
        .iter()
        .take(4)
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    Err(Error::Train(format!(
        "output.dir {} already holds {} ({}{}); add --resume to continue it, --overwrite to \
         delete its outputs and start over, or set output.dir to another directory",
        dir.display(),
        describe(dir),
        names.join(", "),
        if found.len() > 4 { ", ..." } else { "" }
    )))
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
        check_fresh(d).unwrap();
        std::fs::write(d.join("notes.txt"), "mine").unwrap();
        check_fresh(d).unwrap();
        std::fs::write(d.join("metrics.jsonl"), "{\"step\": 50}\n{\"step\": 100}\n").unwrap();
        std::fs::write(d.join("events.out.tfevents.1.host.2.sagan"), "").unwrap();
        std::fs::write(d.join("samples_000050.png"), "").unwrap();
        let e = check_fresh(d).unwrap_err().to_string();
        assert!(
            e.contains("logged up to step 100")
                && e.contains("--resume")
                && e.contains("--overwrite"),
            "{e}"
        );
        assert_eq!(clear(d).unwrap(), 3);
        assert!(d.join("notes.txt").exists());
        check_fresh(d).unwrap();
    }
}
