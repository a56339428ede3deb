//! The real images that KID and precision/recall compare generated ones with: `eval.num_samples`
//! training images (all of them when the set is smaller), chosen by numpy's
//! `RandomState(REAL_SEED).permutation(len)` so that every evaluation of a run, and every run on
//! the same dataset, uses the same ones. Their features (the FID features) are computed once per
//! run across ranks and kept on rank 0, with the real manifold's k-NN radii when
//! precision/recall is on. FID keeps the whole training set's statistics (`reference`).
use tch::{Device, Tensor};

use super::features::FeatureNet;
use super::gathered_rows;
use super::numpy_rng::legacy_permutation;
use super::precision_recall::Manifold;
use crate::config::EvalConfig;
use crate::data::Dataset;
use crate::distributed::Comm;
use crate::error::Result;

/// Fixed, so the real sample does not move with `train.seed`: runs that differ in seed are
/// compared against the same real images.
pub const REAL_SEED: u32 = 2020;

pub struct RealFeatures {
    /// `[n, d]` float64 on the evaluation device.
    pub features: Tensor,
    /// With `eval.precision_recall`.
    pub manifold: Option<Manifold>,
}

/// Whether `cfg` asks for anything that needs real features.
pub fn wanted(cfg: &EvalConfig) -> bool {
    cfg.kid || cfg.precision_recall
}

/// The indices of the real sample of a dataset of `len` images.
pub fn sample_indices(len: usize, n: i64) -> Vec<i64> {
    let mut idx = legacy_permutation(REAL_SEED, len);
    idx.truncate((n.max(0) as usize).min(len));
    idx
}

/// Computes the real features across ranks (every rank takes every W-th chunk of `eval.batch`
/// images) and returns them on rank 0, None elsewhere or when `cfg` wants none. Collective.
pub fn compute(
    comm: &dyn Comm,
    cfg: &EvalConfig,
    net: &FeatureNet,
    data: &Dataset,
    device: Device,
) -> Result<Option<RealFeatures>> {
    if !wanted(cfg) {
        return Ok(None);
    }
    let idx = sample_indices(data.len(), cfg.num_samples);
    let mut mine = Vec::new();
    for (k, chunk) in idx
        .chunks(cfg.batch.max(1) as usize)
        .enumerate()
        .skip(comm.rank())
        .step_by(comm.size())
    {
        let pixels = data.images_at(chunk)?.to_device(device);
        mine.extend(gathered_rows::record(k as i64, &net.fid_features(&pixels)));
    }
    let Some(gathered) = comm.gather_bytes(&mine, 0)? else {
        return Ok(None);
    };
    let features =
        gathered_rows::assemble(&gathered, idx.len() as i64, "real feature")?.to_device(device);
    let manifold = cfg
        .precision_recall
        .then(|| Manifold::new(&features, cfg.pr_k))
        .transpose()?;
    Ok(Some(RealFeatures { features, manifold }))
}
