//! Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric
//! for Assessing Generative Models"). Each set of features spans a manifold: the union of balls
//! around its points, each ball's radius the distance to that point's k-th nearest neighbour in
//! its own set (k = 3 in the paper). Precision is the share of generated samples inside the real
//! manifold (are the samples realistic?), recall the share of real samples inside the generated
//! manifold (is the data's variety covered?). A point on a ball's boundary counts as inside, as
//! in the paper's code and torch-fidelity's `metric_prc`.
//!
//! Distances are Euclidean, in float64, in row blocks so that no full n x n matrix is held: a
//! block of rows against every point of the other set is what both the k-th neighbour and the
//! "inside any ball" test need.
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// The paper's neighbourhood size.
pub const DEFAULT_K: i64 = 3;

/// Distance entries per block (a block of rows against a whole set): 32 Mi float64, 256 MiB.
const BLOCK_ENTRIES: i64 = 1 << 25;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecisionRecall {
    pub precision: f64,
    pub recall: f64,
}

/// One set's manifold: its points and each point's k-NN radius. The real set's is computed once
/// per run and reused by every evaluation.
pub struct Manifold {
    points: Tensor,
    radii: Tensor,
}

impl Manifold {
    /// The manifold of `features` (`[n, d]`, n > k) with radii to the `k`-th nearest other point.
    pub fn new(features: &Tensor, k: i64) -> Result<Self> {
        let points = features.to_kind(Kind::Double);
        let n = points.size().first().copied().unwrap_or(0);
        if k < 1 || n <= k {
            return Err(Error::Eval(format!(
                "precision/recall needs eval.pr_k >= 1 and more than k samples; got k = {k} \
                 for {n} samples"
            )));
        }
        // Each row's own distance (0) is among the k + 1 smallest, so the (k + 1)-th smallest is
        // the k-th neighbour.
        let radii = Tensor::cat(
            &blocks(&points, n)
                .map(|rows| {
                    Tensor::cdist(&rows, &points, 2.0, None::<i64>)
                        .kthvalue(k + 1, 1, false)
                        .0
                })
                .collect::<Vec<_>>(),
            0,
        );
        Ok(Self { points, radii })
    }

    /// The share of `queries` (`[m, d]`) inside at least one of this manifold's balls.
    pub fn coverage_of(&self, queries: &Tensor) -> f64 {
        let queries = queries.to_kind(Kind::Double);
        let n = self.points.size()[0];
        let inside: i64 = blocks(&queries, n)
            .map(|rows| {
                Tensor::cdist(&rows, &self.points, 2.0, None::<i64>)
                    .le_tensor(&self.radii.unsqueeze(0))
                    .any_dim(1, false)
                    .sum(Kind::Int64)
                    .int64_value(&[])
            })
            .sum();
        inside as f64 / queries.size()[0] as f64
    }
}

/// Precision of `fake` against the real manifold, recall of the real points against `fake`'s
/// manifold (built with the same `k` as `real`).
pub fn precision_recall(fake: &Tensor, real: &Manifold, k: i64) -> Result<PrecisionRecall> {
    let fake_manifold = Manifold::new(fake, k)?;
    Ok(PrecisionRecall {
        precision: real.coverage_of(fake),
        recall: fake_manifold.coverage_of(&real.points),
    })
}

/// Row blocks of `rows`, each small enough that the block against `columns` points stays within
/// `BLOCK_ENTRIES` distances.
fn blocks(rows: &Tensor, columns: i64) -> impl Iterator<Item = Tensor> + '_ {
    let per_block = (BLOCK_ENTRIES / columns.max(1)).max(1);
    let n = rows.size()[0];
    (0..n)
        .step_by(per_block as usize)
        .map(move |start| rows.narrow(0, start, per_block.min(n - start)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn points(xs: &[f64]) -> Tensor {
        Tensor::from_slice(xs).view([xs.len() as i64, 1])
    }

    #[test]
    fn by_hand_on_a_line() {
        // Real points 0, 1, 2, 3 with k = 1: radii 1, 1, 1, 1, so the real manifold is [-1, 4].
        // Generated 3.5, 4.0, 10, 11: precision 2/4 (4.0 on a boundary counts). Their manifold
        // (k = 1: radii 0.5, 0.5, 1, 1) is [3, 4.5] and [9, 12]: of the real points only 3 is in,
        // recall 1/4.
        let real = Manifold::new(&points(&[0.0, 1.0, 2.0, 3.0]), 1).unwrap();
        let pr = precision_recall(&points(&[3.5, 4.0, 10.0, 11.0]), &real, 1).unwrap();
        assert_eq!(
            pr,
            PrecisionRecall {
                precision: 0.5,
                recall: 0.25
            }
        );
    }

    #[test]
    fn same_set_is_covered_and_far_set_is_not() {
        tch::manual_seed(3);
        let a = Tensor::randn([300, 8], (Kind::Float, Device::Cpu));
        let real = Manifold::new(&a, DEFAULT_K).unwrap();
        let same = precision_recall(&a, &real, DEFAULT_K).unwrap();
        assert_eq!(
            same,
            PrecisionRecall {
                precision: 1.0,
                recall: 1.0
            }
        );
        let far = precision_recall(&(&a + 100.0), &real, DEFAULT_K).unwrap();
        assert_eq!(
            far,
            PrecisionRecall {
                precision: 0.0,
                recall: 0.0
            }
        );
    }

    #[test]
    fn blocks_cover_every_row_once() {
        let rows = Tensor::arange(10, (Kind::Double, Device::Cpu)).view([10, 1]);
        let sizes: Vec<i64> = blocks(&rows, BLOCK_ENTRIES / 3)
            .map(|b| b.size()[0])
            .collect();
        assert_eq!(sizes, vec![3, 3, 3, 1]);
    }

    #[test]
    fn refuses_k_not_below_the_set_size() {
        let msg = Manifold::new(&points(&[0.0, 1.0, 2.0]), 3)
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("eval.pr_k"), "{msg}");
    }
}
