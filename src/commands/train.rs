//! `sagan train`: one rank of a training job, from the start `--resume`/`--overwrite` ask for.
use crate::cli::TrainArgs;
use crate::distributed::job;
use crate::error::Result;
use crate::metrics::eval;
use crate::train::preemption::{Preemption, EXIT_PREEMPTED};
use crate::train::run::{self, Outcome};
use crate::train::run_dir::StartMode;
use crate::train::Trainer;

/// Exit code 0 when the run finished, 75 ([`EXIT_PREEMPTED`]) when a signal checkpointed it.
pub fn run(args: TrainArgs) -> Result<u8> {
    let cfg = super::load_for_a_rank(&args.config, &args.overrides)?;
    // Before anything starts (on every rank): evaluation that cannot work stops here.
    if cfg.eval.enabled {
        eval::check_fits(&cfg)?;
    }
    let mode = match (args.resume, args.overwrite) {
        (Some(path), _) => StartMode::Resume(path),
        (None, true) => StartMode::Overwrite,
        (None, false) => StartMode::Fresh,
    };
    let preemption = Preemption::install()?;
    let rank = job::join(&cfg)?;
    let trainer = Trainer::new(cfg, rank.comm, rank.device)?;
    let outcome = run::run(trainer, mode, preemption)?;
    job::finalize(rank.comm);
    Ok(match outcome {
        Outcome::Preempted { .. } => EXIT_PREEMPTED as u8,
        _ => 0,
    })
}
