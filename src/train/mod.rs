//! The training loop and its parts.
pub mod adam;
pub mod ema;
pub mod loss;
pub mod run;
pub mod trainer;

pub use trainer::{StepStats, Trainer};
