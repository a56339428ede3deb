//! The SAGAN networks and the layers they are built from.
pub mod attention;
pub mod batch_norm;
pub mod blocks;
pub mod diff_augment;
pub mod discriminator;
pub mod generator;
pub mod inputs;
pub mod spectral_norm;

use tch::{nn, Tensor};

pub use batch_norm::BnMode;
pub use discriminator::Discriminator;
pub use generator::Generator;
pub use spectral_norm::SnMode;

/// Every variable of a store, sorted by name so that all ranks see the same order.
pub fn named_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Trainable parameters, sorted by name.
pub fn parameters(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    named_variables(vs)
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect()
}

/// Non-trainable state (SN u/v, BN running statistics), sorted by name.
pub fn buffers(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    named_variables(vs)
        .into_iter()
        .filter(|(_, t)| !t.requires_grad())
        .collect()
}

pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    parameters(vs).iter().map(|(_, t)| t.numel() as i64).sum()
}

/// `x` with channels-last strides, same shape and values. Networks take their inputs this way so
/// that every activation matches the channels-last convolution weights (see
/// SpectralNorm::refresh): a mix of layouts costs a reorder in every convolution and a strided,
/// unvectorised loop in every elementwise op that meets both.
pub fn channels_last(x: &tch::Tensor) -> tch::Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}
