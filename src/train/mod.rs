//! The training loop and its parts.
pub mod adam;
pub mod checkpointing;
pub mod ema;
pub mod finish;
pub mod loss;
pub mod preemption;
pub mod run;
pub mod run_dir;
pub mod sample_grids;
pub mod schedule;
pub mod stats;
pub mod trainer;
pub mod undo;

pub use trainer::Trainer;
