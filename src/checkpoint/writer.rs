//! Rank 0's checkpoint writer. The live state is copied into a [`Snapshot`] (the only time training
//! waits), and the copy is written by a background thread while the next steps run. One write is in
//! flight at a time; its failure surfaces at the next poll, so a full disk stops the run instead of
//! going unnoticed.
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use super::store::{self, Written};
use super::Snapshot;
use crate::error::{Error, Result};

pub struct Checkpointer {
    root: PathBuf,
    keep: usize,
    in_flight: Option<(i64, JoinHandle<Result<Written>>)>,
    /// The step of the newest checkpoint submitted, so a step is never written twice.
    pub last_step: Option<i64>,
}

impl Checkpointer {
    /// Writes under `<run_dir>/checkpoints`, keeping `keep` checkpoints; clears leftovers of an
    /// interrupted write first.
    pub fn new(run_dir: &Path, keep: usize) -> Checkpointer {
        let root = store::checkpoints_dir(run_dir);
        store::clean_temporaries(&root);
        Checkpointer {
            root,
            keep,
            in_flight: None,
            last_step: None,
        }
    }

    /// Starts writing `snap` (after the previous write has finished); with `wait`, returns only
    /// once it is on disk and `latest` names it. `paused_s` is how long the snapshot held training.
    pub fn submit(&mut self, snap: Snapshot, paused_s: f64, wait: bool) -> Result<()> {
        self.finish()?;
        let step = snap.state.step;
        self.last_step = Some(step);
        let (root, keep) = (self.root.clone(), self.keep);
        let handle = std::thread::Builder::new()
            .name("sagan-checkpoint".into())
            .spawn(move || {
                crate::host::cpu_threads::keep_helper_serial();
                let w = store::write(&root, snap, keep)?;
                println!(
                    "checkpoint: {} ({:.1} MB) written in {:.2} s; training paused {:.1} ms for it",
                    w.dir.display(),
                    w.bytes as f64 / 1e6,
                    w.seconds,
                    paused_s * 1e3
                );
                Ok(w)
            })
            .map_err(|e| Error::Checkpoint {
                path: self.root.clone(),
                msg: format!("cannot start the writer thread: {e}"),
            })?;
        self.in_flight = Some((step, handle));
        if wait {
            self.finish()?;
        }
        Ok(())
    }

    /// Reports the in-flight write's failure if it has finished; does not wait.
    pub fn poll(&mut self) -> Result<()> {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|(_, h)| h.is_finished())
        {
            self.finish()?;
        }
        Ok(())
    }

    /// Waits for the in-flight write.
    pub fn finish(&mut self) -> Result<()> {
        let Some((step, handle)) = self.in_flight.take() else {
            return Ok(());
        };
        match handle.join() {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(Error::Checkpoint {
                path: self.root.join(super::step_dir_name(step)),
                msg: "the writer thread panicked".into(),
            }),
        }
    }
}
