//! The scaling model's report: the fit, the measurements against the model, the step-time check
//! and the cluster prediction, as markdown, a CSV of every observation and two figures.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::curves_plot::{Curve, Panel};
use super::scaling::{
    cluster_step, step_seconds, Cluster, ClusterStep, Gradients, Observation, RingModel,
};

/// One line of bench/overlap_nodes.sh --out: `sagan bench-train`'s figures and the run's setting.
#[derive(Debug, Clone, Deserialize)]
pub struct StepMeasurement {
    pub world: usize,
    pub median_step_s: f64,
    pub work_ms_per_rank: Vec<f64>,
    pub g_params: i64,
    pub d_params: i64,
    pub overlap: bool,
    pub bucket_mb: f64,
    pub link_bits_per_s: f64,
}

/// The link's rate as people write it.
pub fn rate_name(bits_per_s: f64) -> String {
    match bits_per_s {
        b if b <= 0.0 => "unlimited".into(),
        b if b >= 1e9 => format!("{} Gbit/s", b / 1e9),
        b => format!("{} Mbit/s", b / 1e6),
    }
}

fn relative_error(model: f64, measured: f64) -> f64 {
    (model - measured) / measured
}

/// The fitted coefficients and, per ranks and link, how far the model is from what was measured.
pub fn fit_markdown(model: &RingModel, observations: &[Observation]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Fitted to {} all-reduces (bucketed and raw):\n",
        observations.len()
    );
    let _ = writeln!(md, "| coefficient | value | reads as |\n|---|---|---|");
    let _ = writeln!(
        md,
        "| a | {:.3} | the ring uses {:.0}% of a limited link's rate |",
        model.inverse_efficiency,
        100.0 / model.inverse_efficiency
    );
    let _ = writeln!(
        md,
        "| c | {:.3} ns/byte | the software alone moves {:.2} GB/s per rank |",
        model.seconds_per_byte * 1e9,
        1e-9 / model.seconds_per_byte
    );
    let _ = writeln!(
        md,
        "| alpha | {:.0} us | per ring step, 2(P-1) per bucket |",
        model.step_latency_s * 1e6
    );
    let _ = writeln!(
        md,
        "| gamma | {:.2} | link delays waited per ring step |\n",
        model.delay_factor
    );
    let mut groups: BTreeMap<(usize, i64, i64), Vec<f64>> = BTreeMap::new();
    for o in observations {
        let key = (o.ranks, o.link_bits_per_s as i64, (o.delay_s * 1e6) as i64);
        groups
            .entry(key)
            .or_default()
            .push(relative_error(model.seconds(o), o.seconds));
    }
    let _ = writeln!(
        md,
        "| ranks | link | added delay | all-reduces | median abs. error | worst error |\n|---|---|---|---|---|---|"
    );
    for ((ranks, bits, delay_us), errors) in &groups {
        let mut abs: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
        abs.sort_by(f64::total_cmp);
        let worst = errors
            .iter()
            .copied()
            .max_by(|a, b| a.abs().total_cmp(&b.abs()))
            .unwrap_or(0.0);
        let _ = writeln!(
            md,
            "| {ranks} | {} | {} ms | {} | {:.0}% | {:+.0}% |",
            rate_name(*bits as f64),
            *delay_us as f64 / 1e3,
            errors.len(),
            abs[abs.len() / 2] * 100.0,
            worst * 100.0
        );
    }
    md
}

/// How much of a limited link the transport fills, by the bytes one all-reduce call carries:
/// the ring's wire time at the full rate over the measured time (median over rates). The model
/// has one efficiency for every call size; this table shows what that average hides.
pub fn link_use_markdown(observations: &[Observation]) -> String {
    let mut groups: BTreeMap<(i64, usize), Vec<f64>> = BTreeMap::new();
    for o in observations {
        if o.link_bits_per_s <= 0.0 || o.delay_s != 0.0 || o.ranks < 2 || o.seconds <= 0.0 {
            continue;
        }
        let kb_per_call = (o.bytes / o.buckets.max(1) as f64 / 1e3).round() as i64;
        groups
            .entry((kb_per_call, o.ranks))
            .or_default()
            .push(o.wire_seconds() / o.seconds);
    }
    let mut ranks: Vec<usize> = groups.keys().map(|k| k.1).collect();
    ranks.sort_unstable();
    ranks.dedup();
    let mut md = String::from("| MB per call |");
    for r in &ranks {
        let _ = write!(md, " {r} ranks |");
    }
    md += "\n|---|";
    md += &"---|".repeat(ranks.len());
    md += "\n";
    let mut sizes: Vec<i64> = groups.keys().map(|k| k.0).collect();
    sizes.dedup();
    for kb in sizes {
        let _ = write!(md, "| {:.2} |", kb as f64 / 1e3);
        for &r in &ranks {
            match groups.get_mut(&(kb, r)) {
                Some(v) => {
                    v.sort_by(f64::total_cmp);
                    let _ = write!(md, " {:.0}% |", v[v.len() / 2] * 100.0);
                }
                None => md += " |",
            }
        }
        md += "\n";
    }
    md
}

/// Every observation with the model's time, one CSV row each.
pub fn observations_csv(model: &RingModel, observations: &[Observation]) -> String {
    let mut csv =
        String::from("ranks,link_bits_per_s,delay_ms,bytes,buckets,measured_ms,model_ms,error\n");
    for o in observations {
        let m = model.seconds(o);
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{:.3},{:.3},{:.4}",
            o.ranks,
            o.link_bits_per_s,
            o.delay_s * 1e3,
            o.bytes,
            o.buckets,
            o.seconds * 1e3,
            m * 1e3,
            relative_error(m, o.seconds)
        );
    }
    csv
}

/// Buckets of `bytes` at `bucket_mb` MiB (0: one), as the trainer cuts them when parameters are
/// small against a bucket.
fn buckets(bytes: f64, bucket_mb: f64) -> usize {
    if bucket_mb <= 0.0 {
        return 1;
    }
    (bytes / (bucket_mb * 1024.0 * 1024.0)).ceil().max(1.0) as usize
}

/// Measured training steps against the model: the compute is the no-overlap run's own work
/// outside the all-reduces, the all-reduce is the fitted model's.
pub fn steps_markdown(model: &RingModel, steps: &[StepMeasurement]) -> String {
    let mut md = String::from(
        "| ranks | link | buckets (MiB) | overlap | measured step | model step | error |\n|---|---|---|---|---|---|---|\n",
    );
    for s in steps {
        let Some(plain) = steps.iter().find(|p| {
            !p.overlap
                && p.world == s.world
                && p.link_bits_per_s == s.link_bits_per_s
                && p.bucket_mb == s.bucket_mb
        }) else {
            continue;
        };
        let work = plain.work_ms_per_rank.iter().sum::<f64>()
            / plain.work_ms_per_rank.len().max(1) as f64
            / 1e3;
        let mut predicted = 0.0;
        for params in [s.g_params, s.d_params] {
            let bytes = params as f64 * 4.0;
            let k = buckets(bytes, s.bucket_mb);
            let t = model.seconds(&Observation {
                ranks: s.world,
                bytes,
                buckets: k,
                link_bits_per_s: s.link_bits_per_s,
                delay_s: 0.0,
                seconds: 0.0,
            });
            let (plain_step, overlapped) = step_seconds(work / 2.0, t, k);
            predicted += if s.overlap { overlapped } else { plain_step };
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} ms | {:.0} ms | {:+.0}% |",
            s.world,
            rate_name(s.link_bits_per_s),
            s.bucket_mb,
            if s.overlap { "on" } else { "off" },
            s.median_step_s * 1e3,
            predicted * 1e3,
            relative_error(predicted, s.median_step_s) * 100.0
        );
    }
    md
}

/// What the cluster prediction is asked for.
pub struct Prediction<'a> {
    pub name: &'a str,
    pub nets: [Gradients; 2],
    pub seconds_per_image: f64,
    pub per_gpu_batch: f64,
    pub node_counts: &'a [usize],
    pub clusters: &'a [Cluster],
}

impl Prediction<'_> {
    /// The predicted step on `nodes` nodes of `cluster`, each GPU with `per_gpu_batch` images.
    fn step(&self, model: &RingModel, cluster: &Cluster, nodes: usize) -> ClusterStep {
        let compute_s = self.per_gpu_batch * self.seconds_per_image;
        cluster_step(model, cluster, nodes, &self.nets, compute_s)
    }
}

/// One table per link rate: weak scaling (every GPU keeps `per_gpu_batch` images).
pub fn prediction_markdown(model: &RingModel, p: &Prediction) -> String {
    let mut md = String::new();
    for c in p.clusters {
        let _ = writeln!(
            md,
            "\n**{}, {} GPUs per node, {} per node** ({} images per GPU):\n",
            p.name,
            c.gpus_per_node,
            rate_name(c.node_bits_per_s),
            p.per_gpu_batch
        );
        let _ = writeln!(
            md,
            "| nodes | GPUs | compute | all-reduce | step | efficiency | step, overlap | efficiency, overlap | images/s |\n|---|---|---|---|---|---|---|---|---|"
        );
        for &n in p.node_counts {
            let s = p.step(model, c, n);
            let _ = writeln!(
                md,
                "| {n} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0}% | {:.0} ms | {:.0}% | {:.0} |",
                s.gpus,
                s.compute_s * 1e3,
                s.allreduce_s * 1e3,
                s.step_s * 1e3,
                s.efficiency() * 100.0,
                s.step_overlap_s * 1e3,
                s.efficiency_overlap() * 100.0,
                p.per_gpu_batch * s.gpus as f64 / s.step_s
            );
        }
    }
    md
}

/// Modelled all-reduce time of the largest payload against ranks, one curve per link rate and
/// call count (one call, and the most buckets measured), with the measured points on them.
pub fn allreduce_panel(model: &RingModel, observations: &[Observation]) -> (Panel, Vec<String>) {
    let bytes = observations.iter().map(|o| o.bytes).fold(0.0, f64::max);
    let mut rates: Vec<f64> = observations.iter().map(|o| o.link_bits_per_s).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let most_buckets = observations
        .iter()
        .filter(|o| o.bytes == bytes)
        .map(|o| o.buckets)
        .max()
        .unwrap_or(1);
    let mut bucket_counts = vec![1, most_buckets];
    bucket_counts.dedup();
    let max_ranks = observations.iter().map(|o| o.ranks).max().unwrap_or(2);
    let (mut curves, mut points, mut names) = (Vec::new(), Vec::new(), Vec::new());
    for bits in rates {
        for &buckets in &bucket_counts {
            let picked: Vec<&Observation> = observations
                .iter()
                .filter(|o| {
                    o.bytes == bytes
                        && o.buckets == buckets
                        && o.delay_s == 0.0
                        && o.link_bits_per_s == bits
                })
                .collect();
            if picked.is_empty() {
                continue;
            }
            let curve: Curve = (2..=max_ranks)
                .map(|ranks| {
                    let ms = model.seconds(&Observation {
                        ranks,
                        ..*picked[0]
                    }) * 1e3;
                    (ranks as i64, ms, ms, ms)
                })
                .collect();
            curves.push(curve);
            points.push(
                picked
                    .iter()
                    .map(|o| (o.ranks as i64, o.seconds * 1e3))
                    .collect(),
            );
            let calls = if buckets == 1 { "call" } else { "calls" };
            names.push(format!("{}, {buckets} {calls}", rate_name(bits)));
        }
    }
    let panel = Panel {
        title: format!("ALL-REDUCE OF {:.1} MB, MS", bytes / 1e6),
        x_label: "RANKS (LINES: MODEL, RINGS: MEASURED)".into(),
        curves,
        points,
    };
    (panel, names)
}

/// The same cluster steps with no per-step latency at all: the bandwidth-only end of the
/// bracket, since the fitted alpha is TCP's between namespaces and NCCL's is far smaller.
pub fn bandwidth_bound_markdown(model: &RingModel, p: &Prediction) -> String {
    let mut md = String::from("| nodes | GPUs |");
    for c in p.clusters {
        let _ = write!(md, " {0} | {0}, overlap |", rate_name(c.node_bits_per_s));
    }
    md += "\n|---|---|";
    md += &"---|---|".repeat(p.clusters.len());
    md += "\n";
    for &n in p.node_counts {
        let gpus = n * p.clusters.first().map_or(0, |c| c.gpus_per_node);
        let _ = write!(md, "| {n} | {gpus} |");
        for c in p.clusters {
            let s = p.step(model, &c.without_latency(), n);
            let _ = write!(
                md,
                " {:.0}% | {:.0}% |",
                s.efficiency() * 100.0,
                s.efficiency_overlap() * 100.0
            );
        }
        md += "\n";
    }
    md
}

/// Predicted efficiency (compute / step, %) against nodes, per link rate: with the fitted
/// latency, without and with overlap, and with no latency (bandwidth only, no overlap).
pub fn cluster_panel(model: &RingModel, p: &Prediction) -> (Panel, Vec<String>) {
    let last = p.node_counts.iter().copied().max().unwrap_or(1);
    let (mut curves, mut names) = (Vec::new(), Vec::new());
    for (overlap, latency) in [(false, true), (true, true), (false, false)] {
        for c in p.clusters {
            let c = if latency { *c } else { c.without_latency() };
            let curve: Curve = (1..=last)
                .map(|n| {
                    let s = p.step(model, &c, n);
                    let e = 100.0
                        * if overlap {
                            s.efficiency_overlap()
                        } else {
                            s.efficiency()
                        };
                    (n as i64, e, e, e)
                })
                .collect();
            curves.push(curve);
            names.push(format!(
                "{}{}{}",
                rate_name(c.node_bits_per_s),
                if overlap { ", overlap" } else { "" },
                if latency { "" } else { ", no latency" }
            ));
        }
    }
    let panel = Panel {
        title: format!("{}: PREDICTED EFFICIENCY %", p.name.to_uppercase()),
        x_label: "NODES".into(),
        curves,
        points: Vec::new(),
    };
    (panel, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> RingModel {
        RingModel {
            inverse_efficiency: 1.0,
            seconds_per_byte: 0.0,
            step_latency_s: 0.0,
            delay_factor: 0.0,
        }
    }

    #[test]
    fn the_fit_table_reports_each_group_error() {
        // 1 MB over 2 ranks at 8 Mbit/s is 1 s by the model; measured 1.25 s: -20%.
        let o = Observation {
            ranks: 2,
            bytes: 1e6,
            buckets: 1,
            link_bits_per_s: 8e6,
            delay_s: 0.0,
            seconds: 1.25,
        };
        let md = fit_markdown(&model(), &[o]);
        assert!(
            md.contains("| 2 | 8 Mbit/s | 0 ms | 1 | 20% | -20% |"),
            "{md}"
        );
        let csv = observations_csv(&model(), &[o]);
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .ends_with(",1250.000,1000.000,-0.2000"),
            "{csv}"
        );
    }

    #[test]
    fn a_step_is_checked_against_the_plain_run_of_its_setting() {
        let step = |overlap, median_step_s| StepMeasurement {
            world: 2,
            median_step_s,
            work_ms_per_rank: vec![300.0, 300.0],
            g_params: 250_000,
            d_params: 250_000,
            overlap,
            bucket_mb: 0.0,
            link_bits_per_s: 8e6,
        };
        // Each net: 1 MB, one bucket, 1 s at 8 Mbit/s; compute 0.15 s each: 2.3 s in all. With
        // one bucket nothing overlaps.
        let md = steps_markdown(&model(), &[step(false, 2.3), step(true, 2.3)]);
        assert!(
            md.contains("| 2 | 8 Mbit/s | 0 | off | 2300 ms | 2300 ms | +0% |"),
            "{md}"
        );
        assert!(md.contains("| on | 2300 ms | 2300 ms |"), "{md}");
    }

    #[test]
    fn link_use_is_the_ring_wire_time_over_the_measured_time_per_call_size() {
        // 1 MB over 2 ranks at 8 Mbit/s is 1 s on the wire; measured 1.25 s: 80%, in calls of
        // 0.25 MB (4 buckets). Unlimited and delayed links say nothing about link use.
        let o = Observation {
            ranks: 2,
            bytes: 1e6,
            buckets: 4,
            link_bits_per_s: 8e6,
            delay_s: 0.0,
            seconds: 1.25,
        };
        let unlimited = Observation {
            link_bits_per_s: 0.0,
            ..o
        };
        let delayed = Observation {
            delay_s: 0.001,
            seconds: 5.0,
            ..o
        };
        let md = link_use_markdown(&[o, unlimited, delayed]);
        assert!(md.contains("| 0.25 | 80% |"), "{md}");
        assert_eq!(md.lines().count(), 3, "{md}");
    }

    #[test]
    fn the_bandwidth_bound_ignores_the_clusters_latency() {
        // Two nodes of one GPU at 8 Mbit/s: each net's 1 MB takes 1 s, compute 2 s; a step
        // is 4 s whether or not it overlaps (one bucket): 50%. The cluster's 1 s per ring step
        // would add 2 s per net if it counted.
        let nets = [Gradients {
            bytes: 1e6,
            buckets: 1,
        }; 2];
        let clusters = [Cluster {
            gpus_per_node: 1,
            node_bits_per_s: 8e6,
            intra_node_bytes_per_s: 1e12,
            step_latency_s: 1.0,
        }];
        let p = Prediction {
            name: "t",
            nets,
            seconds_per_image: 2.0,
            per_gpu_batch: 1.0,
            node_counts: &[2],
            clusters: &clusters,
        };
        let md = bandwidth_bound_markdown(&model(), &p);
        assert!(md.contains("| 2 | 2 | 50% | 50% |"), "{md}");
        assert!(prediction_markdown(&model(), &p).contains("| 25% |"));
    }

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(rate_name(0.0), "unlimited");
        assert_eq!(rate_name(1e8), "100 Mbit/s");
        assert_eq!(rate_name(4e11), "400 Gbit/s");
    }
}
