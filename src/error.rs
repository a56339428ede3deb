//! The crate's one error type.
use std::path::PathBuf;

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
    #[error("data {path}: {msg}")]
    Data { path: PathBuf, msg: String },
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("model: {0}")]
    Model(String),
    #[error("distributed: {0}")]
    Dist(String),
    #[error("training: {0}")]
    Train(String),
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
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
