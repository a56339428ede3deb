//! The end of a run: what it reports (summary.json and the `train` command's last lines), the
//! final weights files, and each rank's replicated state when `dist.dump_rank_state` asks.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::Tensor;

use super::checkpointing::RunRecord;
use super::stats::median;
use super::trainer::Trainer;
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::metrics::eval::Scores;
use crate::metrics::real_data::RealDataScores;
use crate::model;
use crate::output::{Reporter, StepStats};

/// What a finished run reports.
#[derive(Debug, serde::Serialize)]
pub struct RunSummary {
    pub steps: i64,
    pub world_size: usize,
    pub global_batch: i64,
    pub final_stats: StepStats,
    /// Median seconds per step of this process's part of the run (since its last resume).
    pub median_step_seconds: f64,
    /// Share of the step time this rank spent in gradient all-reduces (this session).
    pub allreduce_share: f64,
    pub images_per_second: f64,
    /// Attention gammas by block (`G.attention.1`, `D.attention.0`).
    pub gammas: BTreeMap<String, f64>,
    pub resyncs: usize,
    /// Steps skipped for non-finite gradients under autocast (see `train::undo`).
    pub skipped_steps: usize,
    /// The network behind FID and IS, the suffix of every metric name (`fmnist_classifier`).
    pub feature_net: Option<String>,
    /// Scores before the first step, by network (`G_ema`), named for the feature network
    /// (`FID_fmnist_classifier`, `IS_fmnist_classifier`, `IS_fmnist_classifier_std`).
    pub scores_start: Option<BTreeMap<String, serde_json::Value>>,
    /// Scores at the end: `G_ema`, and the raw `G` when `eval.score_g`.
    pub scores_end: Option<BTreeMap<String, serde_json::Value>>,
    /// The best G_ema FID of the run and its step (its checkpoint is kept).
    pub best: Option<serde_json::Value>,
    /// What Fashion-MNIST's test images score on the same feature network (the references).
    pub real_data: Option<RealDataScores>,
    /// Steps trained by this process (fewer than `steps` after a resume).
    pub steps_this_session: usize,
    pub run_dir: PathBuf,
    /// The same scores as numbers, for the console report (summary.json has them named).
    #[serde(skip)]
    pub scores: FinalScores,
    /// G's attention blocks by name (their figures are `attention_G.<name>.png`).
    #[serde(skip)]
    pub attention_blocks: Vec<String>,
}

/// The G_ema scores before the first step and at the end, and the raw G's at the end.
#[derive(Debug, Clone, Copy, Default)]
pub struct FinalScores {
    pub start: Option<Scores>,
    pub g_ema: Option<Scores>,
    pub g: Option<Scores>,
}

/// What the loop measured in this session, for [`summarise`].
pub struct Session<'a> {
    pub stats: StepStats,
    pub step_times: &'a [f64],
    pub allreduce_times: &'a [f64],
    /// Wall seconds of the session's steps.
    pub elapsed: f64,
    pub record: &'a RunRecord,
    /// The feature network's metric suffix, when the run evaluates.
    pub label: Option<&'static str>,
    pub real_data: Option<RealDataScores>,
}

/// The run's summary from the trainer's final state, the session's figures and the end scores.
pub fn summarise(t: &Trainer, s: &Session, g_ema: Option<Scores>, g: Option<Scores>) -> RunSummary {
    let label = s.label;
    let named = |sc: &Scores| label.map(|l| named_scores(l, sc));
    let start: Option<Scores> = s
        .record
        .eval_start
        .clone()
        .and_then(|v| serde_json::from_value(v).ok());
    let scores_start = start
        .as_ref()
        .and_then(named)
        .map(|v| BTreeMap::from([("G_ema".to_string(), v)]));
    let mut end = BTreeMap::new();
    for (network, sc) in [("G_ema", &g_ema), ("G", &g)] {
        if let Some(v) = sc.as_ref().and_then(named) {
            end.insert(network.to_string(), v);
        }
    }
    let best = match (label, s.record.best) {
        (Some(l), Some(b)) => {
            Some(serde_json::json!({ "step": b.step, format!("FID_{l}"): b.fid }))
        }
        _ => None,
    };
    RunSummary {
        steps: t.step,
        world_size: t.comm.size(),
        global_batch: t.cfg.train.batch_size,
        final_stats: s.stats,
        median_step_seconds: median(&mut s.step_times.to_vec()),
        allreduce_share: s.allreduce_times.iter().sum::<f64>()
            / s.step_times.iter().sum::<f64>().max(1e-12),
        images_per_second: t.cfg.train.batch_size as f64 * s.step_times.len() as f64
            / s.elapsed.max(1e-9),
        gammas: t.named_gammas().into_iter().collect(),
        resyncs: t.resyncs,
        skipped_steps: t.skipped_steps,
        feature_net: label.map(str::to_string),
        scores_start,
        scores_end: (!end.is_empty()).then_some(end),
        best,
        real_data: s.real_data,
        steps_this_session: s.step_times.len(),
        run_dir: t.cfg.output.dir.clone(),
        scores: FinalScores { start, g_ema, g },
        attention_blocks: t.g.attention_names(),
    }
}

/// This rank's replicated state (parameters and buffers) in `rank_state/rank<N>.safetensors`, for
/// comparing ranks bit for bit.
pub fn dump_rank_state(t: &Trainer) -> Result<()> {
    let d = t.cfg.output.dir.join("rank_state");
    std::fs::create_dir_all(&d).map_err(|e| Error::Io {
        path: d.clone(),
        source: e,
    })?;
    save_weights(
        &t.replicated_state(),
        &d.join(format!("rank{}.safetensors", t.comm.rank())),
        &BTreeMap::new(),
    )
}

/// Rank 0's last files: final weights beside the checkpoints, and summary.json.
pub fn write_final(t: &Trainer, summary: &RunSummary, reporter: &mut Reporter) -> Result<()> {
    let dir = &t.cfg.output.dir;
    reporter.flush()?;
    let cfg_toml = t.cfg.to_toml();
    for (name, vs) in t.networks() {
        let tensors = model::named_variables(vs);
        let names: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
        let meta = checkpoint::weights_metadata(&cfg_toml, t.step, name, &names);
        save_weights(&tensors, &dir.join(format!("{name}.safetensors")), &meta)?;
    }
    let p = dir.join("summary.json");
    let json = serde_json::to_string_pretty(summary).expect("serialisable");
    std::fs::write(&p, json).map_err(|e| Error::Io { path: p, source: e })?;
    Ok(())
}

/// Scores as summary.json gives them: each named for the feature network (`label`).
fn named_scores(label: &str, s: &Scores) -> serde_json::Value {
    let mut named = serde_json::json!({
        format!("FID_{label}"): s.fid,
        format!("IS_{label}"): s.is_mean,
        format!("IS_{label}_std"): s.is_std,
        "class_accuracy": s.class_accuracy,
        "samples": s.samples,
    });
    for (name, v) in s.real_sample_metrics(label) {
        named[name.as_str()] = serde_json::json!(v);
    }
    named
}

/// Writes through a temporary file and a rename, so a crash never leaves a torn weights file.
pub fn save_weights(
    tensors: &[(String, Tensor)],
    path: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    let cpu = checkpoint::snapshot_tensors(tensors);
    checkpoint::weights::write(&tmp, &cpu, metadata)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(())
}
