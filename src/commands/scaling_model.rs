//! `sagan scaling-model`: the ring all-reduce model fitted to the namespace-link benchmarks,
//! checked against measured steps, and its prediction for a config on a GPU cluster.
use std::path::Path;

use serde::de::DeserializeOwned;
use tch::Device;

use crate::cli::ScalingModelArgs;
use crate::config::Config;
use crate::distributed::buckets::plan_buckets;
use crate::error::{Error, IoContext, Result};
use crate::experiments::curves_plot;
use crate::experiments::scaling::{
    v100_seconds_per_image, AllReduceMeasurement, Cluster, Gradients, Observation, RingModel,
};
use crate::experiments::scaling_report::{self as report, Prediction, StepMeasurement};
use crate::model::{self, Discriminator, Generator};

/// The nodes of the prediction's tables.
const NODE_COUNTS: [usize; 6] = [1, 2, 4, 8, 16, 32];
const GPUS_PER_NODE: usize = 8;
/// Per-node link rates of the prediction, bits/s.
const NODE_RATES: [f64; 3] = [100e9, 200e9, 400e9];
/// An assumption, not a measurement: the all-reduce bus bandwidth inside one 8-GPU NVLink node.
const INTRA_NODE_BYTES_PER_S: f64 = 150e9;

pub fn run(a: ScalingModelArgs) -> Result<u8> {
    let measurements: Vec<AllReduceMeasurement> = read_lines(&a.measurements)?;
    let observations: Vec<Observation> =
        measurements.iter().flat_map(|m| m.observations()).collect();
    let model = RingModel::fit(&observations)?;
    let mut md = String::from("## The fit\n\n");
    md += &report::fit_markdown(&model, &observations);
    md += "\nHow much of a limited link the all-reduce fills, by the bytes of one call:\n\n";
    md += &report::link_use_markdown(&observations);
    if let Some(path) = &a.steps {
        let steps: Vec<StepMeasurement> = read_lines(path)?;
        md += "\n## Training steps against the model\n\n";
        md += &report::steps_markdown(&model, &steps);
    }
    let cfg = Config::load(&a.config, &[])?;
    let g = Generator::new(&cfg.model, Device::Cpu)?;
    let d = Discriminator::new(&cfg.model, Device::Cpu)?;
    // The trainer's own bucket plan over each network's parameters.
    let bucket_bytes = (cfg.dist.bucket_mb * 1024.0 * 1024.0) as usize;
    let net = |vs: &tch::nn::VarStore| {
        let sizes: Vec<usize> = model::parameters(vs)
            .iter()
            .map(|(_, p)| p.numel() * 4)
            .collect();
        Gradients {
            bytes: sizes.iter().sum::<usize>() as f64,
            buckets: plan_buckets(&sizes, bucket_bytes).len(),
        }
    };
    let (g_params, d_params) = (model::parameter_count(&g.vs), model::parameter_count(&d.vs));
    let clusters: Vec<Cluster> = NODE_RATES
        .iter()
        .map(|&bits| Cluster {
            gpus_per_node: GPUS_PER_NODE,
            node_bits_per_s: bits,
            intra_node_bytes_per_s: INTRA_NODE_BYTES_PER_S,
            step_latency_s: model.step_latency_s,
        })
        .collect();
    let name = a
        .config
        .file_stem()
        .map_or("the config".into(), |s| s.to_string_lossy().into_owned());
    let prediction = Prediction {
        name: &name,
        nets: [net(&g.vs), net(&d.vs)],
        seconds_per_image: v100_seconds_per_image((cfg.model.g_ch + cfg.model.d_ch) / 2),
        per_gpu_batch: (cfg.train.batch_size as f64 / GPUS_PER_NODE as f64).max(1.0),
        node_counts: &NODE_COUNTS,
        clusters: &clusters,
    };
    md += &format!(
        "\n## Prediction\n\n{name}: G {g_params} and D {d_params} parameters ({:.0} MB of fp32 gradients per step) in buckets of {} MiB (G {}, D {}); {:.1} ms of a V100 per image per step.\n",
        (g_params + d_params) as f64 * 4.0 / 1e6,
        cfg.dist.bucket_mb,
        prediction.nets[0].buckets,
        prediction.nets[1].buckets,
        prediction.seconds_per_image * 1e3
    );
    md += &report::prediction_markdown(&model, &prediction);
    md += &format!(
        "\n**Bandwidth only**: efficiency with no per-step latency (the tables above use the fitted alpha, {:.0} us):\n\n",
        model.step_latency_s * 1e6
    );
    md += &report::bandwidth_bound_markdown(&model, &prediction);
    println!("{md}");
    std::fs::create_dir_all(&a.out).at(&a.out)?;
    let write = |file: &str, text: &str| {
        let path = a.out.join(file);
        std::fs::write(&path, text).at(&path)
    };
    write("scaling.md", &md)?;
    write(
        "allreduce_fit.csv",
        &report::observations_csv(&model, &observations),
    )?;
    let (panel, names) = report::allreduce_panel(&model, &observations);
    curves_plot::write(&a.out.join("allreduce.png"), &[panel], &names)?;
    let (panel, names) = report::cluster_panel(&model, &prediction);
    curves_plot::write(&a.out.join("cluster.png"), &[panel], &names)?;
    println!(
        "scaling-model: {} all-reduces fitted; wrote scaling.md, allreduce_fit.csv, allreduce.png and cluster.png in {}",
        observations.len(),
        a.out.display()
    );
    Ok(0)
}

/// One JSON object per non-empty line; a bad line is named by its number.
fn read_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).at(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::Scaling(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}
