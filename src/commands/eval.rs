//! `sagan eval`: FID, IS, class accuracy (and KID, precision/recall when asked) of a checkpoint's
//! generator, on every rank of the job.
use crate::cli::EvalArgs;
use crate::distributed::job;
use crate::error::Result;
use crate::metrics::eval;

pub fn run(args: EvalArgs) -> Result<u8> {
    let cfg = super::load_for_a_rank(&args.config, &args.overrides)?;
    let rank = job::join(&cfg)?;
    // Checks the weights against the model first, then (eval::check_fits) the feature net.
    if let Some(s) = eval::evaluate_checkpoint(&cfg, rank.comm, rank.device, &args.checkpoint)? {
        let l = eval::label(cfg.eval.feature_net);
        let class_part = s
            .class_accuracy
            .map(|a| format!("  class accuracy {:.4}%", 100.0 * a))
            .unwrap_or_default();
        let extra_part: String = s
            .real_sample_metrics(l)
            .iter()
            .map(|(name, v)| format!("  {name} {v:.9}"))
            .collect();
        println!(
            "{}: FID_{l} {:.9}  IS_{l} {:.9} ± {:.9}{class_part}{extra_part}  ({} samples, {:.1} s)",
            args.checkpoint.display(),
            s.fid,
            s.is_mean,
            s.is_std,
            s.samples,
            s.seconds
        );
    }
    job::finalize(rank.comm);
    Ok(0)
}
