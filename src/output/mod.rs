//! What a run shows: TensorBoard event files, rank 0's reporter (metrics.jsonl, console), the
//! status line, PNG sample grids with their row labels, and the bitmap font that draws them.
pub mod font;
pub mod grid;
pub mod png;
pub mod reporter;
pub mod status_line;
pub mod step_stats;
pub mod tensorboard;

pub use reporter::{Reporter, StepReport};
pub use step_stats::StepStats;
pub use tensorboard::EventWriter;
