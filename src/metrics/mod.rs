//! Evaluation metrics: FID and IS, and the feature networks behind them.
pub mod classifier;
pub mod eval;
pub mod features;
pub mod fid;
pub mod inception;
pub mod inception_score;
pub mod npz;
pub mod numpy_rng;
pub mod real_data;
pub mod reference;

pub use fid::{frechet_distance, FeatureStats, FidStats};
pub use inception_score::{inception_score, InceptionScore, Order};
pub use npz::{load_fid_stats, load_provenance, save_fid_stats};
