//! Between the trainer and its checkpoints: what goes into one, where a run starts, and how the
//! trainer continues from one on every rank.
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::run_dir::{self, StartMode};
use super::trainer::Trainer;
use crate::checkpoint::{
    self, compat, store, weights, BestScore, Found, Snapshot, TensorFile, TrainingState,
};
use crate::distributed::{agree, sync};
use crate::error::{Error, Result};
use crate::model;

/// What a run records beyond the trainer's tensors.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub best: Option<BestScore>,
    pub eval_start: Option<serde_json::Value>,
}

/// Copies the trainer's state for a checkpoint (rank 0; BN statistics already averaged). The writer
/// refuses a state with non-finite values, so a diverged run never replaces a good checkpoint.
pub fn snapshot(t: &Trainer, record: &RunRecord) -> Result<Snapshot> {
    let cfg_toml = t.cfg.to_toml();
    let mut files = Vec::new();
    for (net, vs) in t.networks() {
        let tensors = checkpoint::snapshot_tensors(&model::named_variables(vs));
        let names: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
        files.push(TensorFile {
            name: net.into(),
            metadata: checkpoint::weights_metadata(&cfg_toml, t.step, net, &names),
            tensors,
        });
    }
    for (opt, adam) in t.optimisers() {
        files.push(TensorFile {
            name: opt.into(),
            tensors: checkpoint::snapshot_tensors(&adam.state()),
            metadata: Default::default(),
        });
    }
    let consumed = t.batches_consumed(t.step);
    let per_epoch = t.sampler().batches_per_epoch().max(1) as u64;
    let state = TrainingState {
        format: checkpoint::FORMAT,
        step: t.step,
        epoch: consumed / per_epoch,
        batches_consumed: consumed,
        world_size: t.comm.size(),
        global_batch: t.cfg.train.batch_size,
        adam_g_steps: t.opt_g.step,
        adam_d_steps: t.opt_d.step,
        resyncs: t.resyncs,
        skipped_steps: t.skipped_steps,
        best: record.best,
        eval_start: record.eval_start.clone(),
        config_toml: cfg_toml,
        config_hash: weights::hex(&t.cfg.hash()),
        sagan_version: env!("CARGO_PKG_VERSION").into(),
        libtorch_version: checkpoint::LIBTORCH_VERSION.into(),
        written_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        files: Default::default(),
    };
    Ok(Snapshot { state, files })
}

/// Where a run starts, decided by rank 0 and the same on every rank.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartPoint {
    /// The checkpoint's state when resuming.
    pub resumed: Option<TrainingState>,
    /// Which checkpoint, for messages.
    pub checkpoint: Option<std::path::PathBuf>,
    /// Delete the run directory's outputs before writing any (--overwrite, or --resume without a
    /// checkpoint to resume).
    pub clear_outputs: bool,
    /// What rank 0 found and will say.
    pub notes: Vec<String>,
}

/// Decides where the run starts. Rank 0 inspects the run directory and verifies the checkpoint;
/// it returns the verified checkpoint's tensors, which only it holds.
pub fn decide_start(t: &Trainer, mode: &StartMode) -> Result<(StartPoint, Option<Found>)> {
    let mut found_on_rank0 = None;
    let point = agree::rank0_decides(t.comm, || {
        let (point, found) = inspect(t, mode)?;
        found_on_rank0 = found;
        Ok(point)
    })?;
    Ok((point, found_on_rank0))
}

fn inspect(t: &Trainer, mode: &StartMode) -> Result<(StartPoint, Option<Found>)> {
    let dir = &t.cfg.output.dir;
    let fresh = |clear_outputs, notes| StartPoint {
        resumed: None,
        checkpoint: None,
        clear_outputs,
        notes,
    };
    let contents = run_dir::inspect(dir);
    let path = match mode {
        StartMode::Fresh => {
            contents.check_fresh()?;
            return Ok((fresh(false, vec![]), None));
        }
        StartMode::Overwrite => {
            let n = contents.outputs.len();
            let notes = (n > 0)
                .then(|| {
                    format!(
                        "--overwrite: deleting the {n} outputs of the previous run in {}",
                        dir.display()
                    )
                })
                .into_iter()
                .collect();
            return Ok((fresh(true, notes), None));
        }
        StartMode::Resume(path) => path.as_deref(),
    };
    let (root, exact) = run_dir::resume_source(dir, path);
    let (found, mut notes) = match exact {
        Some(one) => (Some(store::load(&one)?), Vec::new()),
        None => store::find_resumable(&root)?,
    };
    let Some(found) = found else {
        notes.push(format!(
            "--resume: no checkpoint in {}; starting fresh{}",
            root.display(),
            if !contents.holds_run() {
                String::new()
            } else {
                " (deleting the outputs of the earlier, uncheckpointed attempt)".into()
            }
        ));
        return Ok((fresh(true, notes), None));
    };
    let breaking = compat::breaking_changes(&found.state.config_toml, &t.cfg);
    if !breaking.is_empty() {
        return Err(Error::Checkpoint {
            path: found.dir.clone(),
            msg: format!(
                "cannot resume with a different {}: {} (only {} may change on resume)",
                if breaking.len() == 1 {
                    "setting"
                } else {
                    "settings"
                },
                breaking.join("; "),
                compat::SAFE_TO_CHANGE.join(", ")
            ),
        });
    }
    notes.push(format!(
        "resuming from {} (step {}, written by {} rank(s)){}",
        found.dir.display(),
        found.state.step,
        found.state.world_size,
        if found.state.world_size != t.comm.size() {
            format!(
                "; now on {} rank(s): same global batch, the data continues where it was, the \
                 noise of each step is the same, but per-rank batch statistics and the order of \
                 floating-point sums differ, so the run is not bitwise the one it would have been",
                t.comm.size()
            )
        } else {
            String::new()
        }
    ));
    let point = StartPoint {
        resumed: Some(found.state.clone()),
        checkpoint: Some(found.dir.clone()),
        clear_outputs: false,
        notes,
    };
    Ok((point, Some(found)))
}

/// Puts the checkpoint's state into the trainer on every rank: rank 0 copies what it loaded, then
/// broadcasts parameters, buffers and optimiser moments, and every rank confirms it holds exactly
/// rank 0's state.
pub fn restore(t: &mut Trainer, state: &TrainingState, found: Option<Found>) -> Result<()> {
    if let Some(found) = found {
        let file = |name: &str| {
            found
                .files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, l)| l.tensors.as_slice())
                .ok_or_else(|| Error::Checkpoint {
                    path: found.dir.clone(),
                    msg: format!("{name}.safetensors is missing"),
                })
        };
        let p = |name: &str| found.dir.join(format!("{name}.safetensors"));
        for (net, vs) in t.networks() {
            weights::copy_into(&p(net), net, &model::named_variables(vs), file(net)?)?;
        }
        for (opt, adam) in t.optimisers() {
            weights::copy_into(&p(opt), opt, &adam.state(), file(opt)?)?;
        }
    }
    t.opt_g.step = state.adam_g_steps;
    t.opt_d.step = state.adam_d_steps;
    t.set_step(state.step, state.resyncs);
    t.skipped_steps = state.skipped_steps;
    let everything = t.replicated_state();
    sync::broadcast_from_root(t.comm, &everything)?;
    sync::verify_identical(t.comm, &everything)
}
