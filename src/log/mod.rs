//! Monitoring output: TensorBoard event files.
pub mod tensorboard;

pub use tensorboard::EventWriter;
