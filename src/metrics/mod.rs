//! Evaluation metrics: FID, IS, KID, precision/recall, and the feature networks behind them.
pub mod classifier;
pub mod eval;
pub mod features;
pub mod fid;
pub mod gathered_rows;
pub mod inception;
pub mod inception_score;
pub mod kernel_distance;
pub mod npz;
pub mod numpy_rng;
pub mod precision_recall;
pub mod real_data;
pub mod real_features;
pub mod reference;

pub use fid::{frechet_distance, FeatureStats, FidStats};
pub use inception_score::{inception_score, InceptionScore, Order};
pub use npz::{load_fid_stats, load_provenance, save_fid_stats};
