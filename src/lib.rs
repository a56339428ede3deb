//! sagan: a data-parallel trainer for Self-Attention GANs (Zhang et al. 2018) on libtorch.
pub mod alloc;
pub mod autocast;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod config_doc;
pub mod cpu_threads;
pub mod data;
pub mod dist;
pub mod error;
pub mod gpu_check;
pub mod labels;
pub mod log;
pub mod metrics;
pub mod model;
pub mod sample;
pub mod samples;
pub mod summary;
pub mod train;

pub use error::{Error, Result};
