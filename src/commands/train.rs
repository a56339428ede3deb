//! `sagan train`: one rank of a training job, from the start `--resume`/`--overwrite` ask for.
use std::path::Path;

use crate::cli::TrainArgs;
use crate::distributed::job;
use crate::error::Result;
use crate::metrics::eval::{self, Scores};
use crate::train::finish::RunSummary;
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
    if let (Outcome::Finished(summary), 0) = (&outcome, rank.comm.rank()) {
        report(summary);
    }
    job::finalize(rank.comm);
    Ok(match outcome {
        Outcome::Preempted { .. } => EXIT_PREEMPTED as u8,
        Outcome::Finished(_) => 0,
    })
}

/// Rank 0's last lines: how the session went, the scores, where to look.
fn report(summary: &RunSummary) {
    let s = &summary.final_stats;
    let dir = &summary.run_dir;
    println!(
        "done: step {} ({} this session), median {:.3} s/step, {:.1} images/s; final D loss {:.4} (real {:.4} + fake {:.4}), G loss {:.4}; samples in {}",
        summary.steps,
        summary.steps_this_session,
        summary.median_step_seconds,
        summary.images_per_second,
        s.d_loss_real + s.d_loss_fake,
        s.d_loss_real,
        s.d_loss_fake,
        s.g_loss,
        dir.join("samples.png").display()
    );
    if let Some(label) = &summary.feature_net {
        let sc = &summary.scores;
        print_scores(
            label,
            summary.steps,
            sc.start.as_ref(),
            sc.g_ema.as_ref(),
            sc.g.as_ref(),
        );
    }
    print_where_to_look(dir, &summary.attention_blocks);
}

/// The final console line of the scores: the start, G_ema at the end, and the raw G's.
fn print_scores(
    label: &str,
    step: i64,
    start: Option<&Scores>,
    ema: Option<&Scores>,
    raw: Option<&Scores>,
) {
    let Some(ema) = ema else {
        return;
    };
    let at_start = |f: fn(&Scores) -> f64| {
        start
            .map(|s| format!("{:.3} at step 0 -> ", f(s)))
            .unwrap_or_default()
    };
    let raw_part =
        |f: fn(&Scores) -> f64| raw.map(|s| format!(", G {:.3}", f(s))).unwrap_or_default();
    let percent = |s: &Scores| s.class_accuracy.map_or(f64::NAN, |a| 100.0 * a);
    let class_part = if ema.class_accuracy.is_some() {
        format!(
            "; class accuracy: {}G_ema {:.1}%{}",
            start
                .map(|s| format!("{:.1}% at step 0 -> ", percent(s)))
                .unwrap_or_default(),
            percent(ema),
            raw.map(|s| format!(", G {:.1}%", percent(s)))
                .unwrap_or_default()
        )
    } else {
        String::new()
    };
    println!(
        "FID_{label}: {}G_ema {:.3}{} at step {step}; IS_{label}: {}G_ema {:.3}{}{class_part}",
        at_start(|s| s.fid),
        ema.fid,
        raw_part(|s| s.fid),
        at_start(|s| s.is_mean),
        ema.is_mean,
        raw_part(|s| s.is_mean),
    );
}

/// Rank 0's last lines: where to look at what the run made.
fn print_where_to_look(dir: &Path, attention: &[String]) {
    println!("To look at the results:");
    println!(
        "  samples (one row per class, G_ema): {}",
        dir.join("samples.png").display()
    );
    for name in attention {
        println!(
            "  where G's attention looks (query pixels and their attention maps): {}",
            dir.join(format!("attention_G.{name}.png")).display()
        );
    }
    println!(
        "  curves (losses, FID, IS, class accuracy, attention gammas) and images: tensorboard --logdir {}",
        dir.parent().unwrap_or(dir).display()
    );
}
