//! Datasets, the packed format, the distributed sampler and the batch loader.
//!
//! Readers: [`native`] (IDX, CIFAR-10/100 binary, read whole), [`image_folder`] (JPEG/PNG trees,
//! decoded by [`decode`], brought to size by [`resize`]). [`prepare`] packs any of them into the
//! [`packed`] format, which [`dataset::Dataset`] reads without decoding; [`cache`] does that on
//! first use for `data.dataset = "image-folder"`. [`loader`] cuts batches from the [`sampler`]'s
//! shards, with [`flip`]s that depend only on (seed, epoch, sample).
pub mod cache;
pub mod cifar;
pub mod class_names;
pub mod dataset;
pub mod decode;
pub mod flip;
pub mod idx;
pub mod image_folder;
pub mod loader;
pub mod native;
pub mod packed;
pub mod partition;
pub mod prepare;
pub mod progress;
pub mod resize;

pub use dataset::Dataset;
pub use loader::{Loader, LoaderOptions};
pub use partition::DistributedSampler;
