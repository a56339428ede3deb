//! Monitoring output: TensorBoard event files and rank 0's reporter.
pub mod reporter;
pub mod status;
pub mod tensorboard;

pub use reporter::{Reporter, StepReport};
pub use tensorboard::EventWriter;
