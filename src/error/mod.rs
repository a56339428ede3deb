//! The crate's one error type.
use std::path::PathBuf;

mod torch;
pub use torch::{strip_cpp_backtrace, torch_message};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {file}: {msg}")]
    Config { file: String, msg: String },
    /// A `--set` override that is malformed or sets a wrong value (the file is not at fault).
    #[error("--set {spec}: {msg}")]
    Override { spec: String, msg: String },
    /// The feature network cannot score this run's images, or its weights are missing.
    #[error("evaluation: {0}")]
    Eval(String),
    #[error("data {path}: {msg}")]
    Data { path: PathBuf, msg: String },
    #[error("torch: {}", torch_message(.0))]
    Torch(#[from] tch::TchError),
    #[error("model: {0}")]
    Model(String),
    #[error("distributed: {0}")]
    Dist(String),
    #[error("training: {0}")]
    Train(String),
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("sweep: {0}")]
    Sweep(String),
    #[error("compare: {0}")]
    Compare(String),
    #[error("scaling model: {0}")]
    Scaling(String),
    /// A collective did not complete in time (see `dist.timeout_s`).
    #[error("watchdog: {0}")]
    Timeout(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Attaches the path to an I/O error, so every I/O failure says which file it was about.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
