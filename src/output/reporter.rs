//! Rank 0's outputs during a run: the console, `metrics.jsonl` and the TensorBoard event file.
use std::io::Write;
use std::path::{Path, PathBuf};

use tch::Tensor;

use super::tensorboard::{drop_events_after, EventWriter};
use super::StepStats;
use crate::error::{IoContext, Result};
use crate::metrics::eval::Scores;
use crate::metrics::real_data::RealDataScores;

pub struct Reporter {
    metrics: std::fs::File,
    metrics_path: PathBuf,
    tb: EventWriter,
}

/// One logging point of the training loop.
pub struct StepReport<'a> {
    pub step: i64,
    pub stats: &'a StepStats,
    pub gammas: &'a [(String, f64)],
    pub resyncs: usize,
    /// Steps skipped for non-finite gradients under autocast, so far.
    pub skipped_steps: usize,
    pub lr_g: f64,
    pub lr_d: f64,
    pub images_per_second: f64,
    pub seconds_per_step: f64,
    /// Share of the recent steps' time spent in gradient all-reduces.
    pub allreduce_share: f64,
}

impl Reporter {
    /// Opens rank 0's outputs in `dir`. A fresh run starts new files; a resumed run (`resumed_at`
    /// = the checkpoint's step) first drops whatever the interrupted run logged after that step
    /// from metrics.jsonl and the event files, so TensorBoard and the metrics show one run in which
    /// every step appears once, then appends.
    pub fn open(dir: &Path, config_toml: &str, resumed_at: Option<i64>) -> Result<Self> {
        std::fs::create_dir_all(dir).at(dir)?;
        let cfg_path = dir.join("config.toml");
        std::fs::write(&cfg_path, config_toml).at(&cfg_path)?;
        let metrics_path = dir.join("metrics.jsonl");
        let metrics = match resumed_at {
            Some(step) => {
                trim_outputs_after(dir, &metrics_path, step)?;
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&metrics_path)
                    .at(&metrics_path)?
            }
            None => std::fs::File::create(&metrics_path).at(&metrics_path)?,
        };
        let mut tb = EventWriter::create(dir)?;
        if resumed_at.is_none() {
            tb.add_text("config", &format!("```toml\n{config_toml}\n```"), 0)?;
        }
        Ok(Self {
            metrics,
            metrics_path,
            tb,
        })
    }

    fn json_line(&mut self, v: serde_json::Value) -> Result<()> {
        writeln!(self.metrics, "{v}").at(&self.metrics_path)
    }

    pub fn step(&mut self, r: &StepReport) -> Result<()> {
        let s = r.stats;
        println!(
            "step {:>6}  D real {:.4} fake {:.4}  G {:.4}  D(x) {:+.3} D(G(z)) {:+.3}  {:.3} s/step  {:.1} img/s  {:.1}% all-reduce",
            r.step, s.d_loss_real, s.d_loss_fake, s.g_loss, s.d_real, s.d_fake, r.seconds_per_step, r.images_per_second, r.allreduce_share * 100.0
        );
        let gammas: serde_json::Map<String, serde_json::Value> = r
            .gammas
            .iter()
            .map(|(n, g)| (n.clone(), (*g).into()))
            .collect();
        self.json_line(serde_json::json!({
            "step": r.step, "stats": s, "gammas": gammas, "resyncs": r.resyncs,
            "skipped_steps": r.skipped_steps,
            "images_per_second": r.images_per_second, "allreduce_share": r.allreduce_share,
        }))?;
        let scalars = [
            ("loss/D", s.d_loss_real + s.d_loss_fake),
            ("loss/D_real", s.d_loss_real),
            ("loss/D_fake", s.d_loss_fake),
            ("loss/G", s.g_loss),
            ("D/real_mean", s.d_real),
            ("D/fake_mean", s.d_fake),
            ("grad_norm/D", s.d_grad_norm),
            ("grad_norm/G", s.g_grad_norm),
            ("lr/G", r.lr_g),
            ("lr/D", r.lr_d),
            ("perf/images_per_second", r.images_per_second),
            ("perf/allreduce_share", r.allreduce_share),
            ("dist/sn_resyncs", r.resyncs as f64),
            ("train/skipped_steps", r.skipped_steps as f64),
        ];
        for (tag, v) in scalars {
            self.tb.add_scalar(tag, v, r.step)?;
        }
        for (name, g) in r.gammas {
            self.tb
                .add_scalar(&format!("attention_gamma/{name}"), *g, r.step)?;
        }
        // Everything of a reporting step is on disk before the next one starts.
        self.flush()
    }

    /// One evaluation of `network` ("G_ema", or "G"), its metrics named for the feature network
    /// (`label`) everywhere: console, metrics.jsonl, TensorBoard (`eval/FID_<label>` for G_ema,
    /// `eval/FID_<label>_G` for the raw G).
    pub fn scores(&mut self, step: i64, label: &str, network: &str, sc: &Scores) -> Result<()> {
        let class_part = sc
            .class_accuracy
            .map(|a| format!("  class accuracy {:.1}%", 100.0 * a))
            .unwrap_or_default();
        let extra = sc.real_sample_metrics(label);
        let extra_part: String = extra
            .iter()
            .filter(|(name, _)| !name.ends_with("_std"))
            .map(|(name, v)| format!("  {name} {v:.4}"))
            .collect();
        println!(
            "eval step {step} {network}: FID_{label} {:.3}  IS_{label} {:.3} ± {:.3}{class_part}{extra_part}  ({} samples, {:.1} s)",
            sc.fid, sc.is_mean, sc.is_std, sc.samples, sc.seconds
        );
        let mut line = serde_json::json!({
            "step": step, "eval": sc, "feature_net": label, "network": network,
            format!("FID_{label}"): sc.fid, format!("IS_{label}"): sc.is_mean,
        });
        for (name, v) in &extra {
            line[name.as_str()] = serde_json::json!(v);
        }
        self.json_line(line)?;
        let suffix = if network == "G_ema" {
            String::new()
        } else {
            format!("_{network}")
        };
        let class_metric = sc
            .class_accuracy
            .map(|a| (format!("class_accuracy_{label}"), a));
        for (metric, v) in [
            (format!("FID_{label}"), sc.fid),
            (format!("IS_{label}"), sc.is_mean),
            (format!("IS_{label}_std"), sc.is_std),
        ]
        .into_iter()
        .chain(class_metric)
        .chain(extra)
        {
            self.tb
                .add_scalar(&format!("eval/{metric}{suffix}"), v, step)?;
        }
        self.tb.flush()
    }

    /// What real images score on the feature network (the floor and ceiling generated ones are
    /// compared with), once per run under `reference/` at step 0.
    pub fn real_data(&mut self, label: &str, r: &RealDataScores) -> Result<()> {
        println!("{}", r.describe(label));
        self.json_line(serde_json::json!({ "step": 0, "real_data": r, "feature_net": label }))?;
        for (metric, v) in r.metrics(label) {
            self.tb.add_scalar(&format!("reference/{metric}"), v, 0)?;
        }
        self.tb.flush()
    }

    pub fn image(&mut self, tag: &str, chw_u8: &Tensor, step: i64) -> Result<()> {
        self.tb.add_image(tag, chw_u8, step)
    }

    pub fn histogram(&mut self, tag: &str, values: &[f64], step: i64) -> Result<()> {
        self.tb.add_histogram(tag, values, step)
    }

    pub fn flush(&mut self) -> Result<()> {
        self.metrics.flush().at(&self.metrics_path)?;
        self.tb.flush()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            eprintln!("warning: logs not fully written: {e}");
        }
    }
}

/// Removes what a run logged after `step`: lines of metrics.jsonl, events, and sample images.
fn trim_outputs_after(dir: &Path, metrics_path: &Path, step: i64) -> Result<()> {
    if metrics_path.exists() {
        let text = std::fs::read_to_string(metrics_path).at(metrics_path)?;
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_i64())
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let tmp = metrics_path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, kept).at(&tmp)?;
        std::fs::rename(&tmp, metrics_path).at(metrics_path)?;
    }
    for entry in std::fs::read_dir(dir).at(dir)?.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("events.out.tfevents.") {
            drop_events_after(&entry.path(), step)?;
        }
        let sample_step = name
            .strip_prefix("samples_")
            .and_then(|r| r.strip_suffix(".png"))
            .and_then(|n| n.parse::<i64>().ok());
        if sample_step.is_some_and(|s| s > step) {
            std::fs::remove_file(entry.path()).at(entry.path())?;
        }
    }
    Ok(())
}
