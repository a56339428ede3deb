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

/// libtorch's text for an error without the C++ stack that follows it: users get the one line
/// that says what went wrong, never 25 frames of addresses.
pub fn torch_message(e: &tch::TchError) -> String {
    let text = match e {
        tch::TchError::Torch(msg) => msg.clone(),
        other => other.to_string(),
    };
    strip_cpp_backtrace(&text).to_string()
}

/// Cuts a libtorch message at its "Exception raised from ..." trailer and frame list.
pub fn strip_cpp_backtrace(text: &str) -> &str {
    // A panic's message may carry the error's Debug form, where newlines are escaped.
    let cut = [
        "\nException raised from",
        "\nframe #0:",
        "\\nException raised from",
    ]
    .iter()
    .filter_map(|marker| text.find(marker))
    .min()
    .unwrap_or(text.len());
    text[..cut].trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_errors_carry_no_cpp_frames() {
        let a = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        let b = tch::Tensor::zeros([4, 5], (tch::Kind::Float, tch::Device::Cpu));
        let raw = a.f_matmul(&b).unwrap_err();
        assert!(
            raw.to_string().contains("frame #"),
            "libtorch changed: {raw}"
        );
        let shown = Error::from(raw).to_string();
        assert!(shown.contains("shapes cannot be multiplied"), "{shown}");
        assert!(
            !shown.contains("frame #") && !shown.contains("Exception raised"),
            "{shown}"
        );
        assert_eq!(shown.lines().count(), 1, "{shown}");
    }
}
