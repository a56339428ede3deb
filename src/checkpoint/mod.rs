//! Resumable checkpoints: everything an exact resume needs, written so that a crash at any moment
//! leaves the previous checkpoint usable.
//!
//! Layout under `<output.dir>/checkpoints/`:
//! ```text
//! step_00001000/   G, D, G_ema (parameters and buffers) and adam_G, adam_D as .safetensors,
//!                  state.json (step, data position, config, versions, SHA-256 of every file)
//! latest           the name of the newest complete checkpoint, replaced atomically
//! ```
//! safetensors and JSON only, so loading a checkpoint never executes code.
pub mod compat;
pub mod store;
pub mod weights;
pub mod writer;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::Tensor;

pub use store::Found;
pub use weights::FileDigest;
pub use writer::Checkpointer;

/// The version of this layout; a reader refuses newer ones.
pub const FORMAT: u32 = 1;

/// libtorch this binary was built against.
pub const LIBTORCH_VERSION: &str = env!("SAGAN_LIBTORCH_VERSION");

/// `state.json`: what the tensors alone do not say.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingState {
    pub format: u32,
    /// Generator steps completed.
    pub step: i64,
    /// The sampler's epoch and global batches handed out so far (the data position).
    pub epoch: u64,
    pub batches_consumed: u64,
    /// Ranks and global batch of the run that wrote it (a resume may use another world size).
    pub world_size: usize,
    pub global_batch: i64,
    pub adam_g_steps: i64,
    pub adam_d_steps: i64,
    pub resyncs: usize,
    /// Steps skipped for non-finite gradients under autocast (absent from older checkpoints).
    #[serde(default)]
    pub skipped_steps: usize,
    /// The best evaluation so far (its checkpoint is kept), if evaluation runs.
    pub best: Option<BestScore>,
    /// The run's first evaluation, reported again at the end of a resumed run.
    pub eval_start: Option<serde_json::Value>,
    pub config_toml: String,
    pub config_hash: String,
    pub sagan_version: String,
    pub libtorch_version: String,
    /// Seconds since the Unix epoch.
    pub written_at: f64,
    /// Every file of the checkpoint with its size and SHA-256, checked on load.
    pub files: BTreeMap<String, FileDigest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BestScore {
    pub step: i64,
    pub fid: f64,
}

/// One safetensors file of a checkpoint.
pub struct TensorFile {
    pub name: String,
    pub tensors: Vec<(String, Tensor)>,
    pub metadata: BTreeMap<String, String>,
}

/// A checkpoint copied out of the live training state (CPU tensors nothing else touches), ready to
/// be written while training goes on.
pub struct Snapshot {
    pub state: TrainingState,
    pub files: Vec<TensorFile>,
}

/// `step_00001000`.
pub fn step_dir_name(step: i64) -> String {
    format!("step_{step:08}")
}

/// Metadata every weights file carries, so a lone file says what it is: the effective config, the
/// step, the crate version, and which tensors are raw weights and which spectral-norm vectors.
pub fn weights_metadata(
    config_toml: &str,
    step: i64,
    network: &str,
    names: &[String],
) -> BTreeMap<String, String> {
    let sn: Vec<&str> = names
        .iter()
        .filter(|n| n.ends_with("weight_u") || n.ends_with("weight_v"))
        .map(String::as_str)
        .collect();
    BTreeMap::from([
        ("format".into(), "sagan-weights".into()),
        ("network".into(), network.into()),
        ("step".into(), step.to_string()),
        ("sagan_version".into(), env!("CARGO_PKG_VERSION").into()),
        ("config".into(), config_toml.into()),
        (
            "spectral_norm".into(),
            "Tensors named <layer>.weight are the raw (un-normalised) weights; the layer uses \
             weight / sigma with sigma = weight_u . (W weight_v), W = weight reshaped to \
             (out, -1). <layer>.weight_u and .weight_v are the power-iteration vectors \
             (PyTorch calls the raw weight weight_orig)."
                .into(),
        ),
        ("spectral_norm_vectors".into(), sn.join(",")),
    ])
}

/// Copies every tensor to a detached CPU tensor (see [`weights::snapshot`]).
pub fn snapshot_tensors(named: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    named
        .iter()
        .map(|(n, t)| (n.clone(), weights::snapshot(t)))
        .collect()
}
