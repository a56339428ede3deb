//! Datasets, the distributed sampler and the batch loader.
pub mod cifar;
pub mod dataset;
pub mod idx;
pub mod loader;
pub mod sampler;

pub use dataset::Dataset;
pub use loader::Loader;
pub use sampler::DistributedSampler;
