//! `sagan train`: drives the trainer; rank 0 reports (console, metrics.jsonl, TensorBoard) and
//! writes samples and weights; every rank takes part in evaluation.
use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::Tensor;

use super::trainer::{StepStats, Trainer};
use crate::error::{Error, IoContext, Result};
use crate::log::{Reporter, StepReport};
use crate::metrics::eval::{self, FeatureNet, Scores};
use crate::metrics::FidStats;
use crate::model;
use crate::samples;

/// What a finished run reports.
#[derive(Debug, serde::Serialize)]
pub struct RunSummary {
    pub steps: i64,
    pub world_size: usize,
    pub global_batch: i64,
    pub final_stats: StepStats,
    pub median_step_seconds: f64,
    pub images_per_second: f64,
    pub gammas: Vec<f64>,
    pub resyncs: usize,
    pub feature_net: Option<String>,
    pub eval_start: Option<Scores>,
    pub eval_end: Option<Scores>,
    pub run_dir: PathBuf,
}

struct Evaluator {
    net: FeatureNet,
    reference: FidStats,
}

impl Evaluator {
    fn run(&self, t: &Trainer) -> Result<Option<Scores>> {
        let m = &t.cfg.model;
        eval::evaluate(
            t.comm.as_ref(),
            &self.net,
            &self.reference,
            &|z: &Tensor, y: &Tensor| t.sample(z, y),
            m.num_classes,
            m.z_dim,
            &t.cfg.eval,
            t.cfg.train.seed as u64 ^ 0xe7a1,
            t.device,
        )
    }
}

pub fn run(mut t: Trainer) -> Result<RunSummary> {
    let dir = t.cfg.output.dir.clone();
    let mut reporter = if t.comm.rank() == 0 {
        let r = Reporter::create(&dir, &t.cfg.to_toml())?;
        println!(
            "sagan: {} rank(s), backend {}, device {:?}, G {} params, D {} params, {} steps of global batch {}",
            t.comm.size(),
            t.comm.name(),
            t.device,
            model::parameter_count(&t.g.vs),
            model::parameter_count(&t.d.vs),
            t.cfg.train.steps,
            t.cfg.train.batch_size
        );
        Some(r)
    } else {
        None
    };
    let evaluator = if t.cfg.eval.enabled {
        let net = FeatureNet::load(&t.cfg.eval, t.device)?;
        let reference =
            eval::reference_stats(t.comm.as_ref(), &t.cfg.eval, &net, &t.data, t.device)?;
        Some(Evaluator { net, reference })
    } else {
        None
    };
    let label = evaluator.as_ref().map(|e| e.net.label().to_string());
    let mut eval_start = None;
    let evaluate = |t: &Trainer, reporter: &mut Option<Reporter>| -> Result<Option<Scores>> {
        let Some(e) = &evaluator else { return Ok(None) };
        let scores = e.run(t)?;
        if let (Some(r), Some(sc)) = (reporter.as_mut(), &scores) {
            r.scores(t.step, e.net.label(), sc)?;
        }
        Ok(scores)
    };
    if t.cfg.eval.at_start {
        eval_start = evaluate(&t, &mut reporter)?;
    }

    let (grid_z, grid_y) = samples::fixed_inputs(
        t.cfg.model.num_classes,
        10,
        t.cfg.model.z_dim,
        t.cfg.train.seed as u64 ^ 0x5a6a,
        t.device,
    );
    let mut step_times = Vec::new();
    let mut stats = StepStats::default();
    let started = Instant::now();
    let total = t.cfg.train.steps;
    while t.step < total {
        let t0 = Instant::now();
        stats = t.train_step()?;
        step_times.push(t0.elapsed().as_secs_f64());
        let step = t.step;
        let log_every = t.cfg.train.log_every;
        if let Some(r) = reporter
            .as_mut()
            .filter(|_| step % log_every == 0 || step == total)
        {
            let recent = &step_times[step_times.len().saturating_sub(log_every as usize)..];
            let per_step = recent.iter().sum::<f64>() / recent.len() as f64;
            r.step(&StepReport {
                step,
                stats: &stats,
                gammas: &t.named_gammas(),
                resyncs: t.resyncs,
                lr_g: t.opt_g.lr,
                lr_d: t.opt_d.lr,
                images_per_second: t.cfg.train.batch_size as f64 / per_step,
                seconds_per_step: per_step,
            })?;
        }
        let every = t.cfg.train.sample_every;
        if every > 0 && step % every == 0 && step != total {
            // Every rank takes part in the average; rank 0 alone draws and writes.
            t.average_bn_statistics()?;
            if let Some(r) = reporter.as_mut() {
                write_grids(
                    &t,
                    r,
                    &grid_z,
                    &grid_y,
                    Some(&dir.join(format!("samples_{step:06}.png"))),
                )?;
            }
        }
        let eval_every = t.cfg.eval.every;
        if eval_every > 0 && step % eval_every == 0 && step != total {
            evaluate(&t, &mut reporter)?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    t.average_bn_statistics()?;
    let eval_end = evaluate(&t, &mut reporter)?;
    if t.cfg.dist.dump_rank_state {
        let d = dir.join("rank_state");
        std::fs::create_dir_all(&d).at(&d)?;
        save_weights(
            &t.replicated_state(),
            &d.join(format!("rank{}.safetensors", t.comm.rank())),
        )?;
    }
    let summary = RunSummary {
        steps: t.step,
        world_size: t.comm.size(),
        global_batch: t.cfg.train.batch_size,
        final_stats: stats,
        median_step_seconds: median(&mut step_times),
        images_per_second: t.cfg.train.batch_size as f64 * t.step as f64 / elapsed.max(1e-9),
        gammas: t.gammas(),
        resyncs: t.resyncs,
        feature_net: label.clone(),
        eval_start,
        eval_end,
        run_dir: dir.clone(),
    };
    if let Some(r) = reporter.as_mut() {
        write_grids(&t, r, &grid_z, &grid_y, Some(&dir.join("samples.png")))?;
        r.flush()?;
        for (name, vs) in [("G", &t.g.vs), ("D", &t.d.vs), ("G_ema", &t.g_ema.vs)] {
            save_weights(
                &model::named_variables(vs),
                &dir.join(format!("{name}.safetensors")),
            )?;
        }
        let p = dir.join("summary.json");
        std::fs::write(
            &p,
            serde_json::to_string_pretty(&summary).expect("serialisable"),
        )
        .at(&p)?;
        let s = &stats;
        println!(
            "done: {} steps in {:.1} s, median {:.3} s/step, {:.1} images/s; final D loss {:.4} (real {:.4} + fake {:.4}), G loss {:.4}; samples in {}",
            t.step,
            elapsed,
            summary.median_step_seconds,
            summary.images_per_second,
            s.d_loss_real + s.d_loss_fake,
            s.d_loss_real,
            s.d_loss_fake,
            s.g_loss,
            dir.join("samples.png").display()
        );
        if let (Some(l), Some(a), Some(b)) = (&label, &summary.eval_start, &summary.eval_end) {
            println!(
                "FID_{l}: {:.3} at step 0 -> {:.3} at step {}; IS_{l}: {:.3} -> {:.3}",
                a.fid, b.fid, t.step, a.is_mean, b.is_mean
            );
        }
    }
    Ok(summary)
}

/// The fixed-noise grids (one row per class) of G and G_ema and G_ema's attention overlays to
/// TensorBoard; with `png`, G_ema's grid there and the overlays beside it.
fn write_grids(
    t: &Trainer,
    r: &mut Reporter,
    z: &Tensor,
    y: &Tensor,
    png: Option<&Path>,
) -> Result<()> {
    let rows = t.cfg.model.num_classes;
    let ema = samples::grid(&t.sample(z, y), rows);
    let raw = samples::grid(&t.sample_g(z, y), rows);
    r.image("samples/G_ema", &ema, t.step)?;
    r.image("samples/G", &raw, t.step)?;
    // One image per class (the first of each grid row), with where three positions attend.
    let firsts = Tensor::arange_start_step(
        0,
        z.size()[0],
        z.size()[0] / rows,
        (tch::Kind::Int64, z.device()),
    );
    let (images, maps) =
        t.sample_with_attention(&z.index_select(0, &firsts), &y.index_select(0, &firsts));
    for (i, map) in maps.iter().enumerate() {
        let overlay =
            samples::attention_overlay(&images, map, &[(0.3, 0.3), (0.5, 0.5), (0.7, 0.6)]);
        r.image(&format!("attention/G_{i}"), &overlay, t.step)?;
        if let Some(p) = png {
            samples::save_png(&overlay, &p.with_file_name(format!("attention_G_{i}.png")))?;
        }
    }
    let pixels: Vec<f64> = Vec::<f32>::try_from(&ema.to_kind(tch::Kind::Float).view([-1]))
        .expect("f32 pixels")
        .into_iter()
        .map(f64::from)
        .collect();
    r.histogram("samples/G_ema_pixels", &pixels, t.step)?;
    if let Some(p) = png {
        samples::save_png(&ema, p)?;
    }
    Ok(())
}

/// Writes through a temporary file and a rename, so a crash never leaves a torn weights file.
pub fn save_weights(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    let named: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.as_str(),
                t.detach().to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect();
    Tensor::write_safetensors(&named, &tmp).map_err(|e| Error::Checkpoint {
        path: tmp.clone(),
        msg: e.to_string(),
    })?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)?;
    Ok(())
}

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
