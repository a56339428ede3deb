//! The scaling model of data-parallel training: how long the gradient all-reduce takes as ranks,
//! bytes, buckets, link rates and latencies change, fitted to measurements
//! (bench/allreduce_scaling.sh), and what it predicts for a GPU cluster's step time. A ring
//! all-reduce of S bytes over P ranks in k buckets is modelled as
//!
//!   t = a * 2(P-1)/P * S / W  +  c * 2(P-1)/P * S  +  k * 2(P-1) * (alpha + gamma * delay)
//!
//! where W is each link's rate (the first term vanishes on an unlimited link), a = 1/efficiency
//! of the link's use, c the seconds per byte of the software that moves and sums the bytes
//! (copies, TCP, the reduction itself), alpha the latency of one of the ring's 2(P-1) steps and
//! gamma how many times a link's added delay each step waits.
use serde::Deserialize;

use crate::error::{Error, Result};

/// One line of bench/allreduce_scaling.sh: `sagan bench-allreduce --json` and the link's setting.
#[derive(Debug, Clone, Deserialize)]
pub struct AllReduceMeasurement {
    pub ranks: usize,
    pub bytes: f64,
    pub buckets: usize,
    pub bucketed_s: f64,
    pub raw_s: f64,
    /// The tbf rate of every node's link, bits/s; 0 = unlimited.
    pub link_bits_per_s: f64,
    pub delay_ms: f64,
}

/// One timed all-reduce, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub ranks: usize,
    pub bytes: f64,
    pub buckets: usize,
    pub link_bits_per_s: f64,
    pub delay_s: f64,
    pub seconds: f64,
}

impl AllReduceMeasurement {
    /// The bucketed all-reduce (k collectives) and the raw one (one collective of all the bytes).
    pub fn observations(&self) -> [Observation; 2] {
        let o = |buckets, seconds| Observation {
            ranks: self.ranks,
            bytes: self.bytes,
            buckets,
            link_bits_per_s: self.link_bits_per_s,
            delay_s: self.delay_ms / 1e3,
            seconds,
        };
        [o(self.buckets, self.bucketed_s), o(1, self.raw_s)]
    }
}

/// The fitted coefficients of the module's formula.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RingModel {
    /// a: 1 / the share of the link's rate the all-reduce achieves.
    pub inverse_efficiency: f64,
    /// c: the software's seconds per byte each rank sends and receives.
    pub seconds_per_byte: f64,
    /// alpha: seconds per ring step.
    pub step_latency_s: f64,
    /// gamma: how many link delays one ring step waits.
    pub delay_factor: f64,
}

const UNKNOWNS: usize = 4;

impl Observation {
    /// Bytes each rank sends in a ring all-reduce: 2(P-1)/P of the payload.
    pub fn ring_bytes(&self) -> f64 {
        let p = self.ranks as f64;
        2.0 * (p - 1.0) / p * self.bytes
    }

    /// The ring's bytes at the link's full rate; 0 on an unlimited link.
    pub fn wire_seconds(&self) -> f64 {
        if self.link_bits_per_s > 0.0 {
            self.ring_bytes() * 8.0 / self.link_bits_per_s
        } else {
            0.0
        }
    }
}

/// The formula's four terms without their coefficients.
fn features(o: &Observation) -> [f64; UNKNOWNS] {
    let steps = o.buckets as f64 * 2.0 * (o.ranks as f64 - 1.0);
    [o.wire_seconds(), o.ring_bytes(), steps, steps * o.delay_s]
}

impl RingModel {
    pub fn seconds(&self, o: &Observation) -> f64 {
        let f = features(o);
        self.inverse_efficiency * f[0]
            + self.seconds_per_byte * f[1]
            + self.step_latency_s * f[2]
            + self.delay_factor * f[3]
    }

    /// Least squares on the relative error (each observation's row divided by its time), so that
    /// a 10 ms all-reduce counts as much as a 2 s one. A term that no observation exercises (no
    /// limited link, no delay) is left out and gets 0.
    pub fn fit(observations: &[Observation]) -> Result<RingModel> {
        let rows: Vec<[f64; UNKNOWNS]> = observations
            .iter()
            .filter(|o| o.seconds > 0.0 && o.ranks > 1)
            .map(|o| features(o).map(|f| f / o.seconds))
            .collect();
        let used: Vec<usize> = (0..UNKNOWNS)
            .filter(|&j| rows.iter().any(|r| r[j] != 0.0))
            .collect();
        if rows.len() < used.len() || used.is_empty() {
            return Err(Error::Scaling(format!(
                "{} usable measurement(s) of more than one rank for {} unknowns",
                rows.len(),
                used.len().max(1)
            )));
        }
        // Normal equations A'A x = A'1 over the used columns.
        let n = used.len();
        let mut m = vec![vec![0.0; n + 1]; n];
        for r in &rows {
            for (i, &ji) in used.iter().enumerate() {
                for (k, &jk) in used.iter().enumerate() {
                    m[i][k] += r[ji] * r[jk];
                }
                m[i][n] += r[ji];
            }
        }
        let x = solve(m).ok_or_else(|| {
            Error::Scaling(
                "the measurements do not tell the model's terms apart (singular fit)".into(),
            )
        })?;
        let mut c = [0.0; UNKNOWNS];
        for (i, &j) in used.iter().enumerate() {
            c[j] = x[i];
        }
        Ok(RingModel {
            inverse_efficiency: c[0],
            seconds_per_byte: c[1],
            step_latency_s: c[2],
            delay_factor: c[3],
        })
    }
}

/// Gaussian elimination with partial pivoting on the augmented matrix `m` (n rows, n+1 columns).
fn solve(mut m: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let n = m.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        let scale = m.iter().map(|r| r[col].abs()).fold(0.0, f64::max);
        if m[pivot][col].abs() <= 1e-12 * scale.max(f64::MIN_POSITIVE) {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col].clone();
        for (row, r) in m.iter_mut().enumerate() {
            if row != col {
                let f = r[col] / pivot_row[col];
                for (x, p) in r[col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..n).map(|i| m[i][n] / m[i][i]).collect())
}

/// The share of a step's compute that is backward, during which bucketed all-reduces can overlap
/// (backward costs about twice forward).
pub const BACKWARD_SHARE: f64 = 2.0 / 3.0;

/// A step of `compute_s` whose gradients take `allreduce_s` to average in `buckets` buckets,
/// without overlap (one after the other) and with it (every bucket but the last can hide behind
/// the backward that is still running).
pub fn step_seconds(compute_s: f64, allreduce_s: f64, buckets: usize) -> (f64, f64) {
    let last = allreduce_s / buckets.max(1) as f64;
    let exposed = (allreduce_s - BACKWARD_SHARE * compute_s).max(last);
    (compute_s + allreduce_s, compute_s + exposed)
}

/// The compute figure the cluster prediction stands on, from BigGAN-PyTorch's README
/// (github.com/ajbrock/BigGAN-PyTorch): its launch_BigGAN_bs256x8.sh (BigGAN at 128x128, G_ch =
/// D_ch = 96, batch 256 x 8 accumulations = 2048, one D step per G step, fp32 without tensor
/// cores) "takes 15 days to train to 150k iterations" on 8 V100s: 15 * 86400 / 150000 * 8 / 2048
/// = 33.75 ms of one V100 per image per iteration (a D step and a G step).
pub const BIGGAN_CH96_V100_S_PER_IMAGE: f64 = 15.0 * 86400.0 / 150_000.0 * 8.0 / 2048.0;

/// Seconds of one V100 per image per step for a SAGAN of width `ch` at 128x128, scaled from the
/// BigGAN figure by (ch / 96)^2: convolution FLOPs grow with the square of the width. An
/// estimate: BigGAN's extra layers, its attention at 64x64 and the data loading are not scaled.
pub fn v100_seconds_per_image(ch: i64) -> f64 {
    BIGGAN_CH96_V100_S_PER_IMAGE * (ch as f64 / 96.0).powi(2)
}

/// The GPU cluster of the prediction.
#[derive(Debug, Clone, Copy)]
pub struct Cluster {
    pub gpus_per_node: usize,
    /// What one node can send (and receive) to the others, bits/s.
    pub node_bits_per_s: f64,
    /// The bus bandwidth of an all-reduce inside one node (NVLink), bytes/s.
    pub intra_node_bytes_per_s: f64,
    /// Seconds per ring step.
    pub step_latency_s: f64,
}

impl Cluster {
    /// The same cluster with no per-step latency: the bandwidth-only bound.
    pub fn without_latency(self) -> Cluster {
        Cluster {
            step_latency_s: 0.0,
            ..self
        }
    }
}

/// One network's gradients: its bytes and how many buckets they travel in.
#[derive(Debug, Clone, Copy)]
pub struct Gradients {
    pub bytes: f64,
    pub buckets: usize,
}

/// The predicted step of `nodes` nodes, each GPU with `per_gpu_batch` images.
#[derive(Debug, Clone, Copy)]
pub struct ClusterStep {
    pub gpus: usize,
    pub compute_s: f64,
    pub allreduce_s: f64,
    pub step_s: f64,
    pub step_overlap_s: f64,
}

impl ClusterStep {
    pub fn efficiency(&self) -> f64 {
        self.compute_s / self.step_s
    }
    pub fn efficiency_overlap(&self) -> f64 {
        self.compute_s / self.step_overlap_s
    }
}

/// A flat ring over every GPU of the job, which is how NCCL's ring crosses nodes: each node's
/// link carries 2(P-1)/P of the bytes whatever the node count, at the fitted efficiency, and
/// every bucket waits 2(P-1) ring steps of the cluster's latency. On one node the ring runs over
/// NVLink. The software's per-byte cost is this machine's TCP and CPU sums, which NCCL's GPU
/// kernels do not pay, so it is left out.
pub fn cluster_step(
    model: &RingModel,
    cluster: &Cluster,
    nodes: usize,
    nets: &[Gradients],
    compute_s: f64,
) -> ClusterStep {
    let gpus = nodes * cluster.gpus_per_node;
    let bytes_per_s = if nodes == 1 {
        cluster.intra_node_bytes_per_s
    } else {
        cluster.node_bits_per_s / 8.0 / model.inverse_efficiency
    };
    let p = gpus as f64;
    let net_seconds = |g: &Gradients| {
        2.0 * (p - 1.0) / p * g.bytes / bytes_per_s
            + g.buckets as f64 * 2.0 * (p - 1.0) * cluster.step_latency_s
    };
    // G and D are averaged in their own steps, each behind its own backward: half the compute.
    let (mut allreduce_s, mut step_s, mut step_overlap_s) = (0.0, 0.0, 0.0);
    for g in nets {
        let t = net_seconds(g);
        let (plain, overlapped) = step_seconds(compute_s / nets.len() as f64, t, g.buckets);
        allreduce_s += t;
        step_s += plain;
        step_overlap_s += overlapped;
    }
    ClusterStep {
        gpus,
        compute_s,
        allreduce_s,
        step_s,
        step_overlap_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRUE: RingModel = RingModel {
        inverse_efficiency: 1.25,
        seconds_per_byte: 2e-9,
        step_latency_s: 80e-6,
        delay_factor: 2.0,
    };

    fn grid() -> Vec<Observation> {
        let mut out = Vec::new();
        for ranks in [2, 4, 8] {
            for bits in [0.0, 1e8, 4e8] {
                for (bytes, buckets) in [(1e6, 1), (1e6, 8), (8e6, 2), (8e6, 32)] {
                    for delay_s in [0.0, 0.002] {
                        let mut o = Observation {
                            ranks,
                            bytes,
                            buckets,
                            link_bits_per_s: bits,
                            delay_s,
                            seconds: 0.0,
                        };
                        o.seconds = TRUE.seconds(&o);
                        out.push(o);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_fit_recovers_the_coefficients_it_was_made_from() {
        let fit = RingModel::fit(&grid()).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs();
        assert!(close(fit.inverse_efficiency, 1.25), "{fit:?}");
        assert!(close(fit.seconds_per_byte, 2e-9), "{fit:?}");
        assert!(close(fit.step_latency_s, 80e-6), "{fit:?}");
        assert!(close(fit.delay_factor, 2.0), "{fit:?}");
    }

    #[test]
    fn terms_no_measurement_exercises_are_zero_and_too_few_measurements_are_refused() {
        let no_delay: Vec<_> = grid().into_iter().filter(|o| o.delay_s == 0.0).collect();
        let fit = RingModel::fit(&no_delay).unwrap();
        assert_eq!(fit.delay_factor, 0.0);
        assert!((fit.step_latency_s - 80e-6).abs() < 1e-12, "{fit:?}");
        let err = RingModel::fit(&no_delay[..1]).unwrap_err().to_string();
        assert!(err.contains("usable measurement"), "{err}");
        // Same ranks, bytes and buckets everywhere: the terms cannot be told apart.
        let same = vec![no_delay[0]; 6];
        assert!(RingModel::fit(&same).is_err());
    }

    #[test]
    fn the_ring_term_follows_two_n_minus_one_over_n() {
        let o = |ranks| Observation {
            ranks,
            bytes: 1e6,
            buckets: 1,
            link_bits_per_s: 8e6,
            delay_s: 0.0,
            seconds: 0.0,
        };
        let m = RingModel {
            inverse_efficiency: 1.0,
            seconds_per_byte: 0.0,
            step_latency_s: 0.0,
            delay_factor: 0.0,
        };
        // 1 MB at 1 MB/s: 1 s on two ranks, 1.5 s on four, approaching 2 s.
        assert!((m.seconds(&o(2)) - 1.0).abs() < 1e-12);
        assert!((m.seconds(&o(4)) - 1.5).abs() < 1e-12);
        assert!((m.seconds(&o(64)) - 2.0 * 63.0 / 64.0).abs() < 1e-12);
    }

    #[test]
    fn overlap_hides_all_but_the_last_bucket_behind_backward() {
        // 2/3 of a 0.3 s compute is backward: a 0.1 s all-reduce in 4 buckets hides but 0.025 s.
        let (plain, overlapped) = step_seconds(0.3, 0.1, 4);
        assert!((plain - 0.4).abs() < 1e-12);
        assert!((overlapped - 0.325).abs() < 1e-12);
        // Longer than backward: what sticks out stays.
        let (_, overlapped) = step_seconds(0.3, 0.5, 4);
        assert!((overlapped - 0.6).abs() < 1e-12);
    }

    #[test]
    fn the_cited_compute_figure_is_what_the_readme_says() {
        assert!((BIGGAN_CH96_V100_S_PER_IMAGE - 0.03375).abs() < 1e-12);
        assert!((v100_seconds_per_image(96) - 0.03375).abs() < 1e-12);
        assert!((v100_seconds_per_image(48) - 0.03375 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn a_cluster_step_pays_the_node_link_not_the_node_count() {
        let m = RingModel {
            inverse_efficiency: 1.0,
            seconds_per_byte: 1.0,
            step_latency_s: 0.0,
            delay_factor: 0.0,
        };
        let c = Cluster {
            gpus_per_node: 8,
            node_bits_per_s: 8e9,
            intra_node_bytes_per_s: 1e11,
            step_latency_s: 0.0,
        };
        let nets = [Gradients {
            bytes: 1e9,
            buckets: 1,
        }];
        let two = cluster_step(&m, &c, 2, &nets, 1.0);
        let many = cluster_step(&m, &c, 32, &nets, 1.0);
        assert_eq!((two.gpus, many.gpus), (16, 256));
        // 2(P-1)/P of 1 GB at 1 GB/s: the software's per-byte cost is not charged to GPUs.
        assert!((two.allreduce_s - 2.0 * 15.0 / 16.0).abs() < 1e-9);
        assert!((many.allreduce_s - 2.0 * 255.0 / 256.0).abs() < 1e-9);
        assert!(many.step_s > two.step_s && many.efficiency() < two.efficiency());
        let one = cluster_step(&m, &c, 1, &nets, 1.0);
        assert!((one.allreduce_s - 2.0 * 7.0 / 8.0 * 1e9 / 1e11).abs() < 1e-9);
    }
}
