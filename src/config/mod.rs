//! Typed run configuration: TOML with documented defaults, `--set section.key=value` overrides,
//! validation that names the offending key and file, and a stable hash for cross-rank comparison.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod arch;
pub mod explain;
mod load;
mod validate;

pub use load::{join_path, PATH_KEYS};
pub use validate::Invalid;

/// The Inception Score's number of splits (torch-fidelity's `isc_splits`): evaluation needs at
/// least this many samples, which validation checks.
pub const IS_SPLITS: usize = 10;

/// A run's configuration. What each key means, its default and the values it takes are listed in
/// [`crate::config::explain::KEY_DOCS`] (`sagan show-config --explain`, docs/config.md); relative paths
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
    /// Whose batch G's batch norms take their training statistics over.
    pub g_bn: BnStatistics,
    /// Spectral norm on G's weights (the paper's "SN on G/D"); false leaves it on D only.
    pub g_spectral_norm: bool,
}

/// The batch G's batch norms normalise over in training.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BnStatistics {
    /// Each rank's own share of the global batch (as DDP without SyncBatchNorm).
    Local,
    /// The whole global batch: sums over the ranks, forward and backward (BigGAN-PyTorch's
    /// --cross_replica, PyTorch's SyncBatchNorm).
    #[serde(alias = "cross_replica")]
    CrossReplica,
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
    /// How the C allocator serves this process's CPU tensors (see `crate::host::alloc`).
    pub host_memory: HostMemory,
    /// Mixed precision for the step's forwards (see `crate::host::autocast`).
    pub autocast: Autocast,
    /// Differentiable augmentation of every image D sees (see `crate::model::diff_augment`).
    pub augment: Augment,
    /// DiffAugment's transforms, comma-separated, applied in order (names in `AUGMENT_OPS`).
    pub augment_policy: String,
}

/// Augmentation of D's inputs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    None,
    /// DiffAugment (Zhao et al. 2020) with `train.augment_policy`, on real and generated images
    /// in D's and G's steps.
    Diffaugment,
}

/// The transforms `train.augment_policy` may name.
pub const AUGMENT_OPS: [&str; 3] = ["color", "translation", "cutout"];

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
    /// Train on the first this many images only (0 = all): small-data experiments.
    pub max_images: i64,
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
    /// Kernel Inception Distance beside FID (torch-fidelity's definition, on the FID features).
    pub kid: bool,
    /// KID's random subsets (its mean and standard deviation are over them).
    pub kid_subsets: i64,
    /// Generated and real samples per KID subset; at most eval.num_samples.
    pub kid_subset_size: i64,
    /// Improved precision and recall (Kynkaanniemi et al. 2019) beside FID, on the FID features.
    pub precision_recall: bool,
    /// The k of precision/recall's k-nearest-neighbour balls.
    pub pr_k: i64,
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
            kid: false,
            kid_subsets: 100,
            kid_subset_size: 1000,
            precision_recall: false,
            pr_k: 3,
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
            g_bn: BnStatistics::Local,
            g_spectral_norm: true,
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
            augment: Augment::None,
            augment_policy: "color,translation,cutout".into(),
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
            max_images: 0,
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
