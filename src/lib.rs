//! sagan: a data-parallel trainer for Self-Attention GANs (Zhang et al. 2018) on libtorch.
//!
//! The modules form layers that import downward only (docs/architecture.md; tests/layers.rs
//! enforces it): commands > train > services (metrics, checkpoint, output) > substrate (model,
//! data, distributed, host) > leaves (config, error).
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod distributed;
pub mod error;
pub mod experiments;
pub mod host;
pub mod metrics;
pub mod model;
pub mod output;
pub mod train;

pub use error::{Error, Result};
