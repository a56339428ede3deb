//! The checkpoint directory protocol: write into a temporary directory, sync, rename, then replace
//! `latest` atomically; prune; find the newest checkpoint that verifies, falling back past damaged
//! ones.
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::weights::{self, Loaded};
use super::{step_dir_name, Snapshot, TrainingState, FORMAT};
use crate::error::{Error, IoContext, Result};

pub const LATEST: &str = "latest";
pub const STATE_FILE: &str = "state.json";
const TMP_PREFIX: &str = ".tmp-";

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// What a write produced.
#[derive(Debug, Clone)]
pub struct Written {
    pub dir: PathBuf,
    pub bytes: u64,
    pub seconds: f64,
}

/// Writes `snap` as `<root>/step_N/`, makes `latest` name it, and prunes to `keep` checkpoints
/// (plus the best one). On failure nothing that `latest` names has been touched, and the error says
/// so.
pub fn write(root: &Path, snap: Snapshot, keep: usize) -> Result<Written> {
    let started = Instant::now();
    let name = step_dir_name(snap.state.step);
    let tmp = root.join(format!("{TMP_PREFIX}{name}"));
    let result = write_into(root, &tmp, &name, snap);
    let written = match result {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            let previous = read_latest_name(root)
                .map(|p| {
                    format!("the previous checkpoint {p} is intact and `latest` still names it")
                })
                .unwrap_or_else(|| "there is no earlier checkpoint".into());
            return Err(Error::Checkpoint {
                path: root.join(&name),
                msg: format!("writing it failed ({e}); {previous}"),
            });
        }
    };
    prune(root, keep)?;
    Ok(Written {
        seconds: started.elapsed().as_secs_f64(),
        ..written
    })
}

/// A diverged state (NaN or infinity anywhere) must never become `latest`.
fn check_finite(snap: &Snapshot) -> Result<()> {
    for f in &snap.files {
        for (name, t) in &f.tensors {
            if !bool::try_from(t.isfinite().all()).unwrap_or(false) {
                return Err(Error::Train(format!(
                    "step {}: {}.{name} holds non-finite values; not checkpointing a diverged \
                     state",
                    snap.state.step, f.name
                )));
            }
        }
    }
    Ok(())
}

fn write_into(root: &Path, tmp: &Path, name: &str, snap: Snapshot) -> Result<Written> {
    check_finite(&snap)?;
    std::fs::create_dir_all(root).at(root)?;
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).at(tmp)?;
    }
    std::fs::create_dir(tmp).at(tmp)?;
    let mut state = snap.state;
    let mut bytes = 0;
    for f in &snap.files {
        let file = format!("{}.safetensors", f.name);
        let digest = weights::write(&tmp.join(&file), &f.tensors, &f.metadata)?;
        bytes += digest.bytes;
        state.files.insert(file, digest);
    }
    let json = serde_json::to_vec_pretty(&state).expect("serialisable state");
    write_synced(&tmp.join(STATE_FILE), &json)?;
    sync_dir(tmp)?;
    let dir = root.join(name);
    if dir.exists() {
        // A leftover of an interrupted run that never became `latest`.
        std::fs::remove_dir_all(&dir).at(&dir)?;
    }
    std::fs::rename(tmp, &dir).at(&dir)?;
    sync_dir(root)?;
    let pointer = root.join(format!("{TMP_PREFIX}{LATEST}"));
    write_synced(&pointer, format!("{name}\n").as_bytes())?;
    std::fs::rename(&pointer, root.join(LATEST)).at(root.join(LATEST))?;
    sync_dir(root)?;
    Ok(Written {
        dir,
        bytes: bytes + json.len() as u64,
        seconds: 0.0,
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).at(path)?;
    f.write_all(bytes).at(path)?;
    f.sync_all().at(path)
}

/// The checkpoint `latest` names, if the pointer exists and is sane.
pub fn read_latest_name(root: &Path) -> Option<String> {
    let name = std::fs::read_to_string(root.join(LATEST)).ok()?;
    let name = name.trim();
    (name.starts_with("step_") && !name.contains('/')).then(|| name.to_string())
}

/// Complete checkpoint directories, newest first.
pub fn list(root: &Path) -> Vec<(i64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<(i64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step_")?.parse::<i64>().ok()?;
            Some((step, e.path()))
        })
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    out
}

/// Removes what an interrupted write left behind.
pub fn clean_temporaries(root: &Path) {
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
}

/// Keeps the newest `keep`, the one `latest` names and the best one; removes the rest.
fn prune(root: &Path, keep: usize) -> Result<()> {
    let all = list(root);
    let latest = read_latest_name(root);
    let best = latest
        .as_ref()
        .and_then(|n| read_state(&root.join(n)).ok())
        .and_then(|s| s.best)
        .map(|b| step_dir_name(b.step));
    for (i, (_, dir)) in all.iter().enumerate() {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        if i < keep || name == latest || name == best {
            continue;
        }
        std::fs::remove_dir_all(dir).at(dir)?;
    }
    Ok(())
}

pub fn read_state(dir: &Path) -> Result<TrainingState> {
    let p = dir.join(STATE_FILE);
    let text = std::fs::read(&p).at(&p)?;
    let state: TrainingState = serde_json::from_slice(&text).map_err(|e| Error::Checkpoint {
        path: p.clone(),
        msg: format!("unreadable state file: {e}"),
    })?;
    if state.format > FORMAT {
        return Err(Error::Checkpoint {
            path: p,
            msg: format!(
                "format {} is newer than this sagan reads ({FORMAT}); use a newer sagan",
                state.format
            ),
        });
    }
    Ok(state)
}

/// A checkpoint that verified: its state and files (every checksum checked).
pub struct Found {
    pub dir: PathBuf,
    pub state: TrainingState,
    pub files: Vec<(String, Loaded)>,
}

/// Reads and verifies one checkpoint directory.
pub fn load(dir: &Path) -> Result<Found> {
    let state = read_state(dir)?;
    let mut files = Vec::new();
    for (file, digest) in &state.files {
        let loaded = weights::read(&dir.join(file), Some(digest))?;
        files.push((file.trim_end_matches(".safetensors").to_string(), loaded));
    }
    Ok(Found {
        dir: dir.to_path_buf(),
        state,
        files,
    })
}

/// The newest checkpoint under `root` that verifies: the one `latest` names, else the newest
/// complete one before it. Each damaged one is reported in the returned notes.
pub fn find_resumable(root: &Path) -> Result<(Option<Found>, Vec<String>)> {
    let mut notes = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(name) = read_latest_name(root) {
        candidates.push(root.join(name));
    }
    for (_, dir) in list(root) {
        if !candidates.contains(&dir) {
            candidates.push(dir);
        }
    }
    for dir in candidates {
        match load(&dir) {
            Ok(found) => return Ok((Some(found), notes)),
            Err(e) => notes.push(format!("skipping {}: {e}", dir.display())),
        }
    }
    Ok((None, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{TensorFile, TrainingState};
    use std::collections::BTreeMap;
    use tch::{Kind, Tensor};

    fn snap(step: i64) -> Snapshot {
        Snapshot {
            state: TrainingState {
                format: FORMAT,
                step,
                epoch: 0,
                batches_consumed: step as u64,
                world_size: 1,
                global_batch: 4,
                adam_g_steps: step,
                adam_d_steps: step,
                resyncs: 0,
                skipped_steps: 0,
                best: None,
                eval_start: None,
                config_toml: String::new(),
                config_hash: String::new(),
                sagan_version: "test".into(),
                libtorch_version: "test".into(),
                written_at: 0.0,
                files: BTreeMap::new(),
            },
            files: vec![TensorFile {
                name: "G".into(),
                tensors: vec![(
                    "w".into(),
                    Tensor::full([3], step as f64, (Kind::Float, tch::Device::Cpu)),
                )],
                metadata: BTreeMap::new(),
            }],
        }
    }

    #[test]
    fn latest_names_the_newest_and_pruning_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for step in 1..=5 {
            write(dir.path(), snap(step), 2).unwrap();
        }
        assert_eq!(read_latest_name(dir.path()).unwrap(), "step_00000005");
        let left: Vec<i64> = list(dir.path()).iter().map(|(s, _)| *s).collect();
        assert_eq!(left, vec![5, 4]);
        let (found, notes) = find_resumable(dir.path()).unwrap();
        assert!(notes.is_empty());
        assert_eq!(found.unwrap().state.step, 5);
    }

    #[test]
    fn a_non_finite_state_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), snap(1), 3).unwrap();
        let bad = snap(2);
        let _ = bad.files[0].tensors[0].1.get(1).fill_(f64::NAN);
        let e = write(dir.path(), bad, 3).unwrap_err().to_string();
        assert!(
            e.contains("non-finite") && e.contains("step_00000001 is intact"),
            "{e}"
        );
        assert_eq!(
            read_latest_name(dir.path()).as_deref(),
            Some("step_00000001")
        );
        assert_eq!(list(dir.path()).len(), 1);
    }

    #[test]
    fn the_best_checkpoint_outlives_the_newest_ones() {
        let dir = tempfile::tempdir().unwrap();
        for step in 1..=6 {
            let mut s = snap(step);
            // Step 2 scored best; later states keep saying so.
            s.state.best =
                (step >= 2).then_some(crate::checkpoint::BestScore { step: 2, fid: 10.0 });
            write(dir.path(), s, 2).unwrap();
        }
        let left: Vec<i64> = list(dir.path()).iter().map(|(s, _)| *s).collect();
        assert_eq!(left, vec![6, 5, 2]);
    }

    #[test]
    fn a_damaged_latest_falls_back_to_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), snap(1), 3).unwrap();
        let w = write(dir.path(), snap(2), 3).unwrap();
        let g = w.dir.join("G.safetensors");
        let bytes = std::fs::read(&g).unwrap();
        std::fs::write(&g, &bytes[..bytes.len() - 4]).unwrap();
        let (found, notes) = find_resumable(dir.path()).unwrap();
        assert_eq!(found.unwrap().state.step, 1);
        assert!(
            notes[0].contains("step_00000002") && notes[0].contains("truncated"),
            "{notes:?}"
        );
    }
}
