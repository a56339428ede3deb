//! Typed run configuration: TOML with documented defaults, `--set section.key=value` overrides,
//! validation that names the offending key and file, and a stable hash for cross-rank comparison.
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::model::arch::Arch;

/// A run's configuration. What each key means, its default and the values it takes are listed in
/// [`crate::config_doc::KEY_DOCS`] (`sagan show-config --explain`, docs/config.md); relative paths
/// resolve as [`PATH_KEYS`] says.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub data: DataConfig,
    pub dist: DistConfig,
    pub output: OutputConfig,
    pub eval: EvalConfig,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionKind {
    /// Official code: keys and values max-pooled 2x2, values C/2 wide, output 1x1 conv back to C.
    Official,
    /// Paper: values C wide, no pooling, no output conv.
    Paper,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Image side in pixels; selects the architecture table (32, 64, 128, 256).
    pub resolution: i64,
    /// Image channels: 1 for grayscale data, 3 for colour.
    pub img_channels: i64,
    /// Number of classes for conditional BN (G) and the projection head (D).
    pub num_classes: i64,
    /// Latent size.
    pub z_dim: i64,
    /// G base width; block widths are multiples of it (see the architecture table).
    pub g_ch: i64,
    /// D base width.
    pub d_ch: i64,
    /// Feature-map resolutions after which G has a self-attention block.
    pub g_attn_res: Vec<i64>,
    /// Feature-map resolutions after which D has a self-attention block.
    pub d_attn_res: Vec<i64>,
    /// Attention variant: "official" (default) or "paper".
    pub attention: AttentionKind,
    /// Epsilon of the power iteration's l2 normalisation (official code: 1e-12; BigGAN: 1e-8).
    pub sn_eps: f64,
    /// Batch-norm epsilon.
    pub bn_eps: f64,
    /// Running-statistics momentum (TF decay 0.999 = momentum 0.001).
    pub bn_momentum: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Generator steps to run.
    pub steps: i64,
    /// Global batch; each rank takes batch_size / world_size.
    pub batch_size: i64,
    /// D steps per G step.
    pub d_steps: i64,
    pub lr_g: f64,
    pub lr_d: f64,
    pub beta1: f64,
    /// The paper's 0.9; the official code leaves TF's 0.999.
    pub beta2: f64,
    pub adam_eps: f64,
    /// EMA decay of G's weights into G_ema; 0 disables the average (G_ema = G).
    pub ema_decay: f64,
    /// Step from which the EMA averages; before it G_ema copies G.
    pub ema_start: i64,
    pub seed: i64,
    /// Print losses every this many steps (rank 0).
    pub log_every: i64,
    /// Write a sample grid every this many steps (0 = only at the end).
    pub sample_every: i64,
    /// Intra-op threads per rank; 0 = the CPUs this rank may run on (its affinity, as the
    /// launcher bound it) divided by the ranks of this node bound to the same CPUs.
    pub threads: i64,
    /// Write a resumable checkpoint every this many steps (0 = only at the end and on preemption).
    pub checkpoint_every: i64,
    /// Checkpoints kept (the newest ones; the best by FID is kept as well when evaluation runs).
    pub keep_checkpoints: i64,
    /// How the C allocator serves this process's CPU tensors (see `crate::alloc`).
    pub host_memory: HostMemory,
    /// Mixed precision for the step's forwards (see `crate::autocast`).
    pub autocast: Autocast,
}

/// The training step's forwards under libtorch's autocast, or in fp32.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Autocast {
    /// Everything in fp32.
    Off,
    /// Convolutions and matrix products in bf16; weights, gradients, optimiser state, spectral
    /// norm's power iteration and the losses in fp32.
    Bf16,
}

/// The C allocator's policy for CPU tensors: peak memory against page faults.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HostMemory {
    /// A block of 32 MiB or more that the heap has no free room for is mapped, and unmapped when
    /// freed; the heap is never trimmed.
    MapLarge,
    /// Every block from the heap, never trimmed: no page faults after the first step, a higher
    /// peak (the heap fragments).
    KeepAll,
    /// The C library's own defaults (or those of an allocator preloaded with LD_PRELOAD).
    System,
    /// tcmalloc (libtcmalloc_minimal.so.4) preloaded by restarting the sagan binary on it: freed
    /// blocks are reused by size, without page faults and without keep-all's peak. MapLarge where
    /// the library is missing.
    Tcmalloc,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// IDX files (Fashion-MNIST, MNIST), gzipped or not: `data.path` is their folder.
    FashionMnist,
    /// CIFAR-10 binary: `data.path` holds data_batch_{1..5}.bin.
    Cifar10,
    /// CIFAR-100 binary: `data.path` holds train.bin (fine labels, 100 classes).
    Cifar100,
    /// A file written by `sagan prepare` (`data.path`), read without decoding.
    Packed,
    /// One subfolder per class (`data.path`), JPEG and PNG; packed into `data.cache_dir` on
    /// first use.
    ImageFolder,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub dataset: DatasetKind,
    /// The dataset's folder (IDX, CIFAR, ImageFolder) or packed file.
    pub path: PathBuf,
    /// Drop the samples that do not fill a whole global batch (else pad by repeating).
    pub drop_remainder: bool,
    /// Mirror each training image left to right with probability 1/2, drawn from (seed, epoch,
    /// sample), so resumed runs and other world sizes flip the same images.
    pub flip: bool,
    /// Loader threads per rank cutting batches ahead of the training step (0 = 2).
    pub workers: i64,
    /// Batches each loader thread keeps ready.
    pub prefetch: i64,
    /// Where `image-folder` datasets are packed on first use.
    pub cache_dir: PathBuf,
    /// Check every checksum of a packed file when it is opened (the header is always checked);
    /// false saves a full read of a very large file on slow storage.
    pub verify: bool,
    /// When packing an `image-folder`, leave out unreadable images (listed and counted) instead of
    /// stopping at the first.
    pub skip_bad: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// NCCL on CUDA, MPI on CPU, Local for a single rank.
    Auto,
    Local,
    Mpi,
    Nccl,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DistConfig {
    pub backend: BackendKind,
    /// Gradient bucket size in MiB; 0 = one bucket per network.
    pub bucket_mb: f64,
    /// Start each bucket's all-reduce during backward, as soon as its gradients are complete.
    pub overlap: bool,
    /// Check that SN u/v and BN buffers agree across ranks every this many steps (0 = never).
    pub sync_check_every: i64,
    /// Write every rank's parameters, buffers and Adam moments to `<output.dir>/rank_state/` at the
    /// end (for verifying that replicas are identical).
    pub dump_rank_state: bool,
    /// Seconds a collective may take before the watchdog ends the whole job with a message naming
    /// the step and the operation (a rank that stopped answering must not hang the others).
    pub timeout_s: f64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureNetKind {
    /// The project's Fashion-MNIST classifier (`sagan train-classifier`): metrics named
    /// FID_fmnist_classifier / IS_fmnist_classifier, not comparable with Inception numbers.
    FmnistClassifier,
    /// pytorch-fid's Inception-v3 (pt_inception-2015-12-05 converted to safetensors).
    Inception,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Compute FID and IS at all.
    pub enabled: bool,
    /// Also every this many steps during training (0 = only at the start and the end).
    pub every: i64,
    /// Evaluate before the first step too, as the baseline the run should improve on.
    pub at_start: bool,
    /// At the end, score the raw G as well as G_ema (one more evaluation).
    pub score_g: bool,
    /// Generated samples per evaluation, split over the ranks; at least 10 (IS's splits).
    pub num_samples: i64,
    /// Samples generated per forward pass. Sampling uses batch statistics, so every forward pass
    /// generates this many (the last one's surplus is dropped); compare runs at the same value.
    pub batch: i64,
    pub feature_net: FeatureNetKind,
    /// Weights of the feature network (safetensors).
    pub weights: PathBuf,
    /// Reference statistics (pytorch-fid .npz: mu, sigma, plus the provenance sagan records).
    /// Empty (the default): sagan's cache, `fid_stats/<feature net>_<N>x<C>x<H>x<W>_<hash>.npz`
    /// in the directory of `eval.weights`, the hash over what the statistics are computed from
    /// (feature network and its weights, training images), recomputed when it does not match. A
    /// path: used if its recorded provenance matches this run, refused if not; a pytorch-fid file
    /// without provenance is used with a warning; computed and written there when missing.
    pub reference_stats: PathBuf,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            every: 0,
            at_start: true,
            score_g: true,
            num_samples: 10000,
            batch: 250,
            feature_net: FeatureNetKind::FmnistClassifier,
            weights: PathBuf::from(".cache/fmnist_classifier.safetensors"),
            reference_stats: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Run directory: samples, weights, logs, checkpoints.
    pub dir: PathBuf,
    /// Classes shown in sample grids and attention figures (evenly spaced over all classes when
    /// there are more; 0 = all of them).
    pub sample_classes: i64,
    /// Samples per class (one grid row each).
    pub samples_per_class: i64,
    /// The console's live progress line.
    pub progress: ProgressKind,
}

/// Whether rank 0 redraws a progress line (step, images/s, ETA, losses) after every step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ProgressKind {
    /// A line when stdout is a terminal and no launcher stands between: under mpirun every rank's
    /// stdout is a pseudo-terminal whatever mpirun's own is, so there it takes `line`.
    Auto,
    /// Always (scripts that know their terminal pass it: scripts/demo.sh).
    Line,
    /// Never: only the plain log lines every train.log_every steps (CI, Slurm logs).
    Plain,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            resolution: 32,
            img_channels: 1,
            num_classes: 10,
            z_dim: 128,
            g_ch: 64,
            d_ch: 64,
            g_attn_res: vec![16],
            d_attn_res: vec![16],
            attention: AttentionKind::Official,
            sn_eps: 1e-12,
            bn_eps: 1e-5,
            bn_momentum: 0.001,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 64,
            d_steps: 1,
            lr_g: 1e-4,
            lr_d: 4e-4,
            beta1: 0.0,
            beta2: 0.9,
            adam_eps: 1e-8,
            ema_decay: 0.9999,
            ema_start: 2000,
            seed: 0,
            log_every: 50,
            sample_every: 0,
            threads: 0,
            checkpoint_every: 1000,
            keep_checkpoints: 3,
            host_memory: HostMemory::Tcmalloc,
            autocast: Autocast::Off,
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetKind::FashionMnist,
            path: PathBuf::from("/usr/share/datasets/fashion-mnist"),
            drop_remainder: true,
            flip: false,
            workers: 0,
            prefetch: 4,
            cache_dir: PathBuf::from(".cache/data"),
            verify: true,
            skip_bad: false,
        }
    }
}

impl Default for DistConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::Auto,
            bucket_mb: 25.0,
            overlap: false,
            sync_check_every: 100,
            dump_rank_state: false,
            timeout_s: 600.0,
        }
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("runs/sagan"),
            sample_classes: 10,
            samples_per_class: 10,
            progress: ProgressKind::Auto,
        }
    }
}

/// A config value that is wrong: the keys it is about and what is wrong with them.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub keys: Vec<&'static str>,
    pub msg: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

fn invalid(keys: &[&'static str], msg: String) -> Invalid {
    Invalid {
        keys: keys.to_vec(),
        msg,
    }
}

/// The keys that hold paths. A relative path written in a config file (or a relative default the
/// file leaves in place) is relative to the directory of that file; one given with `--set`, to
/// the current directory. Both are made absolute when the config is loaded, so the effective
/// config (and the run's config.toml) means the same from anywhere.
pub const PATH_KEYS: [&str; 5] = [
    "data.path",
    "data.cache_dir",
    "eval.weights",
    "eval.reference_stats",
    "output.dir",
];

/// Whether an override of `set_key` decides `key`: the same key, a section above it, or a key
/// inside it (an override of a whole section).
fn overrides_key(set_key: &str, key: &str) -> bool {
    set_key == key
        || key
            .strip_prefix(set_key)
            .is_some_and(|r| r.starts_with('.'))
        || set_key
            .strip_prefix(key)
            .is_some_and(|r| r.starts_with('.'))
}

/// `rel` joined to `anchor`, an absolute path without symbolic links (a canonical directory, or
/// the current directory as the kernel reports it). Leading `..` are folded into the anchor, which
/// is exact because the anchor has no links; any later ones are left for the OS to resolve.
pub fn join_path(anchor: &Path, rel: &Path) -> PathBuf {
    let mut out = anchor.to_path_buf();
    let mut parts = rel.components().peekable();
    while let Some(c) = parts.peek() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            _ => break,
        }
        parts.next();
    }
    out.extend(parts);
    out
}

/// The directory a config file's relative paths are relative to, without symbolic links.
fn config_dir(path: &Path) -> Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    dir.canonicalize().at(dir)
}

impl Config {
    /// Reads `path`, applies `overrides` ("section.key=value"), deserialises, resolves relative
    /// paths (see [`PATH_KEYS`]) and validates. Errors name the file, or the override at fault.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        let base = config_dir(path)?;
        Self::parse(&text, &path.display().to_string(), Some(&base), overrides)
    }

    /// From TOML text without a file: `origin` names the source in error messages (e.g.
    /// "<defaults>"), and relative paths not given by an override stay relative.
    pub fn from_toml_str(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        Self::parse(text, origin, None, overrides)
    }

    fn parse(text: &str, origin: &str, base: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Config {
            file: origin.to_string(),
            msg: e.to_string(),
        })?;
        let mut set = Vec::new();
        for o in overrides {
            let key = apply_override(&mut table, o).map_err(|msg| Error::Override {
                spec: o.clone(),
                msg,
            })?;
            set.push((key, o.clone()));
        }
        // An error about a key that an override decided is that override's, not the file's.
        let blame = |keys: &[&str], msg: String| match set
            .iter()
            .rev()
            .find(|(k, _)| keys.iter().any(|key| overrides_key(k, key)))
        {
            Some((_, spec)) => Error::Override {
                spec: spec.clone(),
                msg,
            },
            None => Error::Config {
                file: origin.to_string(),
                msg,
            },
        };
        let mut cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                blame(&[key.as_str()], format!("key `{key}`: {}", e.into_inner()))
            })?;
        let from_set = |key: &str| set.iter().any(|(k, _)| overrides_key(k, key));
        cfg.resolve_paths(base, &from_set)?;
        cfg.validate().map_err(|e| blame(&e.keys, e.msg))?;
        Ok(cfg)
    }

    /// The path-valued keys and their values (see [`PATH_KEYS`]).
    fn paths_mut(&mut self) -> [(&'static str, &mut PathBuf); 5] {
        [
            (PATH_KEYS[0], &mut self.data.path),
            (PATH_KEYS[1], &mut self.data.cache_dir),
            (PATH_KEYS[2], &mut self.eval.weights),
            (PATH_KEYS[3], &mut self.eval.reference_stats),
            (PATH_KEYS[4], &mut self.output.dir),
        ]
    }

    /// Makes relative paths absolute: an override's against the current directory, the file's
    /// (and defaults') against `base`, the file's directory (left relative without one). An empty
    /// path means "not set" and stays empty.
    fn resolve_paths(
        &mut self,
        base: Option<&Path>,
        from_set: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        let mut cwd = None;
        for (key, value) in self.paths_mut() {
            if value.as_os_str().is_empty() || value.is_absolute() {
                continue;
            }
            let anchor = if from_set(key) {
                if cwd.is_none() {
                    cwd = Some(std::env::current_dir().at(".")?);
                }
                cwd.as_deref()
            } else {
                base
            };
            if let Some(anchor) = anchor {
                *value = join_path(anchor, value);
            }
        }
        Ok(())
    }

    /// Checks values that the types alone cannot; the error names the keys it is about.
    pub fn validate(&self) -> std::result::Result<(), Invalid> {
        self.validate_counts()?;
        self.validate_rates()?;
        self.validate_architecture()
    }

    fn validate_counts(&self) -> std::result::Result<(), Invalid> {
        let m = &self.model;
        let t = &self.train;
        let positive_i = [
            ("model.img_channels", m.img_channels),
            ("model.num_classes", m.num_classes),
            ("model.z_dim", m.z_dim),
            ("model.g_ch", m.g_ch),
            ("model.d_ch", m.d_ch),
            ("train.steps", t.steps),
            ("train.batch_size", t.batch_size),
            ("train.d_steps", t.d_steps),
            ("train.log_every", t.log_every),
            ("train.keep_checkpoints", t.keep_checkpoints),
            ("data.prefetch", self.data.prefetch),
            ("output.samples_per_class", self.output.samples_per_class),
        ];
        for (key, v) in positive_i {
            if v <= 0 {
                return Err(invalid(&[key], format!("key `{key}` must be > 0, got {v}")));
            }
        }
        if self.eval.enabled {
            for (key, v) in [
                ("eval.num_samples", self.eval.num_samples),
                ("eval.batch", self.eval.batch),
            ] {
                if v <= 0 {
                    return Err(invalid(&[key], format!("key `{key}` must be > 0, got {v}")));
                }
            }
            let splits = crate::metrics::inception_score::DEFAULT_SPLITS as i64;
            if self.eval.num_samples < splits {
                return Err(invalid(
                    &["eval.num_samples"],
                    format!(
                        "key `eval.num_samples` must be >= {splits} (the Inception Score splits \
                         the samples into {splits} parts), got {}",
                        self.eval.num_samples
                    ),
                ));
            }
        }
        let non_negative_i = [
            ("eval.every", self.eval.every),
            ("train.ema_start", t.ema_start),
            ("train.sample_every", t.sample_every),
            ("train.threads", t.threads),
            ("train.checkpoint_every", t.checkpoint_every),
            ("dist.sync_check_every", self.dist.sync_check_every),
            ("output.sample_classes", self.output.sample_classes),
            ("data.workers", self.data.workers),
        ];
        for (key, v) in non_negative_i {
            if v < 0 {
                return Err(invalid(
                    &[key],
                    format!("key `{key}` must be >= 0, got {v}"),
                ));
            }
        }
        Ok(())
    }

    fn validate_rates(&self) -> std::result::Result<(), Invalid> {
        let m = &self.model;
        let t = &self.train;
        let positive_f = [
            ("train.lr_g", t.lr_g),
            ("train.lr_d", t.lr_d),
            ("train.adam_eps", t.adam_eps),
            ("model.sn_eps", m.sn_eps),
            ("model.bn_eps", m.bn_eps),
            ("dist.timeout_s", self.dist.timeout_s),
        ];
        for (key, v) in positive_f {
            if !(v > 0.0 && v.is_finite()) {
                return Err(invalid(
                    &[key],
                    format!("key `{key}` must be a finite number > 0, got {v}"),
                ));
            }
        }
        let unit = [
            ("train.beta1", t.beta1),
            ("train.beta2", t.beta2),
            ("train.ema_decay", t.ema_decay),
            ("model.bn_momentum", m.bn_momentum),
        ];
        for (key, v) in unit {
            if !(0.0..1.0).contains(&v) {
                return Err(invalid(
                    &[key],
                    format!("key `{key}` must be in [0, 1), got {v}"),
                ));
            }
        }
        if !(self.dist.bucket_mb >= 0.0 && self.dist.bucket_mb.is_finite()) {
            return Err(invalid(
                &["dist.bucket_mb"],
                format!(
                    "key `dist.bucket_mb` must be >= 0, got {}",
                    self.dist.bucket_mb
                ),
            ));
        }
        Ok(())
    }

    fn validate_architecture(&self) -> std::result::Result<(), Invalid> {
        let m = &self.model;
        if m.g_ch % 8 != 0 || m.d_ch % 8 != 0 {
            return Err(invalid(
                &["model.g_ch", "model.d_ch"],
                format!(
                    "keys `model.g_ch` and `model.d_ch` must be multiples of 8 (attention uses C/8 channels), got {} and {}",
                    m.g_ch, m.d_ch
                ),
            ));
        }
        let arch = Arch::for_resolution(m.resolution).ok_or_else(|| {
            invalid(
                &["model.resolution"],
                format!(
                    "key `model.resolution`: no architecture for {}; available: {:?}",
                    m.resolution,
                    Arch::resolutions()
                ),
            )
        })?;
        for (key, wanted, available) in [
            ("model.g_attn_res", &m.g_attn_res, arch.g_resolutions()),
            ("model.d_attn_res", &m.d_attn_res, arch.d_resolutions()),
        ] {
            // Either key can be the one that is wrong: the resolution picks the feature-map sizes.
            let keys = [key, "model.resolution"];
            for r in wanted {
                if !available.contains(r) {
                    return Err(invalid(&keys, format!(
                        "key `{key}`: the {}x{} architecture has no {r}x{r} feature map; available: {available:?}",
                        m.resolution, m.resolution
                    )));
                }
                let blocks: Vec<usize> = (0..available.len())
                    .filter(|&i| available[i] == *r)
                    .collect();
                if blocks.len() > 1 {
                    return Err(invalid(&keys, format!(
                        "key `{key}`: {r}x{r} is the feature-map size after blocks {blocks:?} of the {}x{} architecture, so it does not say where one attention block goes; the sizes after its blocks are {available:?} (choose a size that occurs once)",
                        m.resolution, m.resolution
                    )));
                }
                if m.attention == AttentionKind::Official && r % 2 != 0 {
                    return Err(invalid(&[key, "model.attention"], format!("key `{key}`: official attention max-pools 2x2, needs an even resolution, got {r}")));
                }
            }
        }
        Ok(())
    }

    /// Per-rank batch for `world_size` ranks; the global batch must split evenly.
    pub fn batch_per_rank(&self, world_size: i64) -> Result<i64> {
        let b = self.train.batch_size;
        if b % world_size != 0 {
            return Err(Error::Config {
                file: "<run>".into(),
                msg: format!(
                    "key `train.batch_size` = {b} is not divisible by the {world_size} ranks of this run"
                ),
            });
        }
        Ok(b / world_size)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config always serialises")
    }

    /// Hash of the canonical serialisation: equal on every rank iff the effective configs are equal.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.to_toml().as_bytes()).into()
    }
}

/// Sets the value `spec` ("section.key=value") names in `table`; returns the key.
fn apply_override(table: &mut toml::Table, spec: &str) -> std::result::Result<String, String> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| "expected section.key=value".to_string())?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("bad key `{key}`"));
    }
    // A bare word that is not valid TOML (a path, a name) is taken as a string.
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, sections) = parts.split_last().expect("non-empty");
    let mut cur = table;
    for s in sections {
        cur = cur
            .entry(s.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{s}` is not a section"))?;
    }
    cur.insert(last.to_string(), value);
    Ok(parts.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        let c = Config::from_toml_str("", "<empty>", &[]).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn override_sets_nested_values() {
        let c = Config::from_toml_str(
            "",
            "x",
            &[
                "train.lr_d=0.001".into(),
                "output.dir=/tmp/a b".into(),
                "model.g_attn_res=[8]".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.train.lr_d, 0.001);
        assert_eq!(c.output.dir, PathBuf::from("/tmp/a b"));
        assert_eq!(c.model.g_attn_res, vec![8]);
    }

    #[test]
    fn relative_paths_follow_their_source() {
        let base = Path::new("/base/configs");
        assert_eq!(
            join_path(base, Path::new("../runs/x")),
            PathBuf::from("/base/runs/x")
        );
        assert_eq!(
            join_path(base, Path::new("./a/../b")),
            PathBuf::from("/base/configs/a/../b")
        );
        let text = "[output]\ndir = \"out\"\n[eval]\nweights = \"../w.st\"\n";
        let cfg = Config::parse(text, "f", Some(base), &["data.path=d".into()]).unwrap();
        assert_eq!(cfg.output.dir, PathBuf::from("/base/configs/out"));
        assert_eq!(cfg.eval.weights, PathBuf::from("/base/w.st"));
        assert_eq!(cfg.data.path, std::env::current_dir().unwrap().join("d"));
        assert_eq!(
            cfg.eval.reference_stats,
            PathBuf::new(),
            "empty means unset"
        );
        // A default the file leaves in place is the file's too; absolute paths stay as they are.
        let cfg = Config::parse("", "f", Some(base), &[]).unwrap();
        assert_eq!(cfg.output.dir, PathBuf::from("/base/configs/runs/sagan"));
        assert_eq!(cfg.data.path, Config::default().data.path);
    }

    #[test]
    fn an_override_is_blamed_for_the_keys_it_sets() {
        assert!(overrides_key("train.steps", "train.steps"));
        assert!(overrides_key("train", "train.steps"));
        assert!(overrides_key("train.steps", "train"));
        assert!(!overrides_key("train.step", "train.steps"));
        let e = Config::from_toml_str("[train]\nsteps = 5\n", "f.toml", &["train.lr_g=-1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--set train.lr_g=-1: key `train.lr_g`"),
            "{e}"
        );
        let e = Config::from_toml_str("[train]\nsteps = -5\n", "f.toml", &["train.lr_g=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config f.toml: key `train.steps`"), "{e}");
    }

    #[test]
    fn hash_tracks_content() {
        let a = Config::default();
        let mut b = Config::default();
        assert_eq!(a.hash(), b.hash());
        b.train.seed = 1;
        assert_ne!(a.hash(), b.hash());
    }
}
