//! `sagan train`: drives the trainer, prints progress (rank 0), writes samples, metrics and weights.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::Tensor;

use super::trainer::{StepStats, Trainer};
use crate::error::{Error, IoContext, Result};
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
    pub run_dir: PathBuf,
}

pub fn run(mut t: Trainer) -> Result<RunSummary> {
    let rank0 = t.comm.rank() == 0;
    let dir = t.cfg.output.dir.clone();
    let samples_per_class = 10;
    let (grid_z, grid_y) = samples::fixed_inputs(
        t.cfg.model.num_classes,
        samples_per_class,
        t.cfg.model.z_dim,
        t.cfg.train.seed as u64 ^ 0x5a6a,
        t.device,
    );
    let mut metrics = None;
    if rank0 {
        std::fs::create_dir_all(&dir).at(&dir)?;
        let cfg_path = dir.join("config.toml");
        std::fs::write(&cfg_path, t.cfg.to_toml()).at(&cfg_path)?;
        let m = dir.join("metrics.jsonl");
        metrics = Some((std::fs::File::create(&m).at(&m)?, m));
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
    }
    let mut step_times = Vec::new();
    let mut stats = StepStats::default();
    let started = Instant::now();
    while t.step < t.cfg.train.steps {
        let t0 = Instant::now();
        stats = t.train_step()?;
        step_times.push(t0.elapsed().as_secs_f64());
        let step = t.step;
        if rank0 && (step % t.cfg.train.log_every == 0 || step == t.cfg.train.steps) {
            let line = serde_json::json!({ "step": step, "stats": stats, "gammas": t.gammas(), "resyncs": t.resyncs });
            if let Some((f, path)) = metrics.as_mut() {
                writeln!(f, "{line}").at(path.as_path())?;
            }
            let recent = &step_times[step_times
                .len()
                .saturating_sub(t.cfg.train.log_every as usize)..];
            println!(
                "step {step:>6}  D real {:.4} fake {:.4}  G {:.4}  D(x) {:+.3} D(G(z)) {:+.3}  {:.3} s/step",
                stats.d_loss_real,
                stats.d_loss_fake,
                stats.g_loss,
                stats.d_real,
                stats.d_fake,
                recent.iter().sum::<f64>() / recent.len() as f64
            );
        }
        let every = t.cfg.train.sample_every;
        if every > 0 && step % every == 0 && step != t.cfg.train.steps {
            // Every rank takes part in the average; rank 0 alone draws and writes.
            t.average_bn_statistics()?;
        }
        if rank0 && every > 0 && step % every == 0 && step != t.cfg.train.steps {
            write_grid(
                &t,
                &grid_z,
                &grid_y,
                &dir.join(format!("samples_{step:06}.png")),
            )?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let median = median(&mut step_times);
    let summary = RunSummary {
        steps: t.step,
        world_size: t.comm.size(),
        global_batch: t.cfg.train.batch_size,
        final_stats: stats,
        median_step_seconds: median,
        images_per_second: t.cfg.train.batch_size as f64 * t.step as f64 / elapsed.max(1e-9),
        gammas: t.gammas(),
        resyncs: t.resyncs,
        run_dir: dir.clone(),
    };
    t.average_bn_statistics()?;
    if t.cfg.dist.dump_rank_state {
        let d = dir.join("rank_state");
        std::fs::create_dir_all(&d).at(&d)?;
        save_weights(&t.replicated_state(), &d.join(format!("rank{}.safetensors", t.comm.rank())))?;
    }
    if rank0 {
        write_grid(&t, &grid_z, &grid_y, &dir.join("samples.png"))?;
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
        println!(
            "done: {} steps in {:.1} s, median {:.3} s/step, {:.1} images/s; final D loss {:.4} (real {:.4} + fake {:.4}), G loss {:.4}; samples in {}",
            t.step,
            elapsed,
            median,
            summary.images_per_second,
            stats.d_loss_real + stats.d_loss_fake,
            stats.d_loss_real,
            stats.d_loss_fake,
            stats.g_loss,
            dir.join("samples.png").display()
        );
    }
    Ok(summary)
}

fn write_grid(t: &Trainer, z: &Tensor, y: &Tensor, path: &Path) -> Result<()> {
    let images = t.sample(z, y);
    samples::save_png(&samples::grid(&images, t.cfg.model.num_classes), path)?;
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
