//! What every config key means, the values it takes and its default: the one source of
//! `sagan show-config --explain` and of docs/config.md (generated from it; a test keeps the file up
//! to date, and another checks that this table names exactly the keys `Config` has). Defaults are
//! not repeated here: they are read from `Config::default()`.
use crate::config::{Config, PATH_KEYS};

/// One key's documentation.
pub struct KeyDoc {
    /// `section.key`.
    pub key: &'static str,
    /// The values it takes.
    pub allowed: &'static str,
    pub meaning: &'static str,
}

const fn doc(key: &'static str, allowed: &'static str, meaning: &'static str) -> KeyDoc {
    KeyDoc {
        key,
        allowed,
        meaning,
    }
}

pub const KEY_DOCS: &[KeyDoc] = &[
    // [model]
    doc("model.resolution", "32, 64, 128, 256", "Image side in pixels; selects the architecture table (src/config/arch.rs) and must equal the data's image size."),
    doc("model.img_channels", "integer > 0 (1 grayscale, 3 colour)", "Image channels; must equal the data's."),
    doc("model.num_classes", "integer > 0", "Classes of the conditional batch norms (G) and of the projection head (D); must equal the dataset's."),
    doc("model.z_dim", "integer > 0", "Length of the latent vector z."),
    doc("model.g_ch", "multiple of 8", "G's base width; block widths are multiples of it (see the architecture table)."),
    doc("model.d_ch", "multiple of 8", "D's base width."),
    doc("model.g_attn_res", "list of feature-map sizes after G's blocks (8, 16, ... up to the resolution)", "Where G has self-attention: after the block whose output is this size (e.g. [16] at 32x32: after block 1, named `G.attention.1`)."),
    doc("model.d_attn_res", "list of feature-map sizes that occur once after D's blocks", "Where D has self-attention: after the block whose output is this size."),
    doc("model.attention", "\"official\", \"paper\"", "\"official\" (the authors' code): keys and values max-pooled 2x2, values C/2 wide, a 1x1 output conv back to C channels, so attention costs a quarter. \"paper\" (the paper's equations): no pooling, values C wide, no output conv."),
    doc("model.sn_eps", "number > 0", "Epsilon of the spectral-norm power iteration's l2 normalisation (official code 1e-12, BigGAN 1e-8)."),
    doc("model.bn_eps", "number > 0", "Batch-norm epsilon."),
    doc("model.bn_momentum", "[0, 1)", "Running-statistics momentum (TensorFlow's decay 0.999 is momentum 0.001)."),
    doc("model.g_bn", "\"local\", \"cross-replica\"", "The batch G's batch norms normalise over in training. \"local\": each rank's share of the global batch (train.batch_size / ranks images), as DDP without SyncBatchNorm. \"cross-replica\": the whole global batch, the statistics summed over the ranks in one collective per batch norm, and their gradients in backward (BigGAN-PyTorch's --cross_replica); one rank gives the same numbers either way. Sampling and evaluation always use each forward pass's own batch."),
    doc("model.g_spectral_norm", "true, false", "Spectral norm on G's convolutions, linear layers and attention (the paper's \"SN on G/D\", the default). false divides none of G's weights by sigma (SN on D only: Miyato et al.'s setting, the paper's baseline in its Figure 3); G's u and v buffers stay in the weights files either way. D is always spectrally normalised."),
    // [train]
    doc("train.steps", "integer > 0", "Generator steps to run (the run's total, also after a resume)."),
    doc("train.batch_size", "integer > 0, divisible by the number of ranks", "Global batch; each rank takes batch_size / ranks. The learning rates belong to it: keep it when changing the GPU count."),
    doc("train.d_steps", "integer > 0", "D steps per G step."),
    doc("train.lr_g", "number > 0", "G's Adam learning rate (TTUR: 1e-4)."),
    doc("train.lr_d", "number > 0", "D's Adam learning rate (TTUR: 4e-4)."),
    doc("train.beta1", "[0, 1)", "Adam beta1 of both networks."),
    doc("train.beta2", "[0, 1)", "Adam beta2 of both networks (the paper's 0.9; the official code leaves TensorFlow's 0.999)."),
    doc("train.adam_eps", "number > 0", "Adam epsilon."),
    doc("train.ema_decay", "[0, 1)", "Decay of the exponential moving average of G's weights into G_ema; 0 makes G_ema a copy of G."),
    doc("train.ema_start", "integer >= 0", "Step from which G_ema averages; before it G_ema copies G."),
    doc("train.seed", "integer", "Seed of the initial weights, the data order and every step's noise. The noise and data order are the same on every device; the initial weights are drawn by the device's own generator, so a CUDA run starts from other weights than a CPU run of the same seed (a checkpoint resumes exactly on either)."),
    doc("train.log_every", "integer > 0", "Print and log losses every this many steps (rank 0)."),
    doc("train.sample_every", "integer >= 0", "Write a sample grid (samples_NNNNNN.png, TensorBoard) every this many steps; 0 = only at the end."),
    doc("train.threads", "integer >= 0", "Intra-op CPU threads per rank; 0 = the CPUs this rank may run on (as the launcher bound it) divided by the ranks of its node bound to the same CPUs."),
    doc("train.checkpoint_every", "integer >= 0", "Write a resumable checkpoint every this many steps; 0 = only at the end and on preemption."),
    doc("train.keep_checkpoints", "integer > 0", "Checkpoints kept: the newest ones, plus the one with the best FID when evaluation runs."),
    doc("train.host_memory", "\"tcmalloc\", \"map-large\", \"keep-all\", \"system\"", "Who serves CPU tensors. tcmalloc: the sagan binary restarts itself with libtcmalloc_minimal.so.4 preloaded (Debian: libtcmalloc-minimal4; SAGAN_TCMALLOC names another file), which reuses freed blocks by size: keep-all's speed with a lower peak RSS than map-large's (docs/performance.md); where the library is missing, map-large, and rank 0 says so. The other three are glibc policies. map-large: a block of 32 MiB or more that the heap has no free room for is mapped afresh and returned when freed, at a page fault per 4 KiB each time; the heap is never trimmed. keep-all: every block from the heap, kept: no page faults after the first step, but the heap fragments (17-33 % higher peak RSS on the CIFAR-10 config). system: glibc's defaults, or an allocator you preload with LD_PRELOAD yourself."),
    doc("train.autocast", "\"off\", \"bf16\"", "Mixed precision for the training step's forwards. bf16: libtorch's autocast on the rank's device (CUDA or CPU) runs convolutions and matrix products in bf16, while weights, gradients, Adam's moments, spectral norm's power iteration and the losses stay fp32; bf16 keeps fp32's exponent range, so no loss scaling is needed (fp16, which would need it, is not offered). Attention's softmax and batch-norm statistics stay fp32 too. A step whose averaged gradients are not finite is skipped for G and D together (both put back as they were, counted as skipped_steps in metrics.jsonl, TensorBoard and summary.json); five in a row stop the run as diverged (in fp32 the first one does). Meant for GPUs with bf16 tensor cores; on the development CPU, AVX512-BF16 and all, it ran at 0.7x fp32's speed (docs/performance.md). Sampling and evaluation stay fp32."),
    doc("train.augment", "\"none\", \"diffaugment\"", "Differentiable augmentation of D's inputs. \"diffaugment\" (Zhao et al. 2020): train.augment_policy's transforms on every real and generated image D sees, in D's steps and G's, with gradients through them to G; the standard help for small datasets. Its random draws come from (train.seed, step, phase), so runs stay reproducible and resumes exact."),
    doc("train.augment_policy", "comma-separated: color, translation, cutout", "DiffAugment's transforms, applied in order (the paper's \"color,translation,cutout\"): brightness, saturation and contrast; a shift by up to 1/8 of the size, zero-filled; a zeroed square of half the size."),
    // [data]
    doc("data.dataset", "\"fashion-mnist\", \"cifar10\", \"cifar100\", \"packed\", \"image-folder\"", "What data.path is: IDX files (Fashion-MNIST, MNIST; gzipped or not), the CIFAR-10 binaries (data_batch_{1..5}.bin), CIFAR-100's train.bin (fine labels), a file written by `sagan prepare` (read without decoding), or an ImageFolder (one subfolder per class, JPEG/PNG), packed into data.cache_dir on first use. IDX and CIFAR are brought to model.resolution in memory: resized (centre crop, antialiased bicubic), except 28x28 to 32x32, zero-padded (docs/data.md)."),
    doc("data.path", "a directory or a packed file", "Where the dataset is: the folder of its files, or the packed file for \"packed\"."),
    doc("data.drop_remainder", "true, false", "Drop the samples that do not fill a whole global batch at the end of an epoch (else pad by repeating)."),
    doc("data.flip", "true, false", "Mirror each training image left to right with probability 1/2, drawn from (seed, epoch, sample), so a resumed run or another number of ranks flips the same images."),
    doc("data.workers", "integer >= 0", "Loader threads per rank, each cutting whole batches ahead of the training step; 0 = 2."),
    doc("data.prefetch", "integer > 0", "Batches each loader thread keeps ready."),
    doc("data.cache_dir", "a directory", "Where \"image-folder\" datasets are packed on first use (a file named after the folder's listing, the resolution and the channels, so a changed folder is packed anew). Every node must see it."),
    doc("data.verify", "true, false", "Check every checksum of a packed file when it is opened (the header is always checked); false saves reading a very large file on slow storage."),
    doc("data.skip_bad", "true, false", "When packing an \"image-folder\", leave out unreadable images (listed and counted) instead of stopping at the first."),
    doc("data.max_images", "integer >= 0", "Train on the first this many images of the dataset only (0 = all), for small-data experiments (e.g. with train.augment = \"diffaugment\"). FID's reference statistics are then those of these images."),
    // [dist]
    doc("dist.backend", "\"auto\", \"local\", \"mpi\", \"nccl\"", "How ranks communicate: \"auto\" picks NCCL when every rank has a GPU, MPI when none has (a mix is refused), nothing for one rank; \"mpi\" trains on CPUs even where GPUs exist."),
    doc("dist.bucket_mb", "number >= 0", "Gradient all-reduce bucket size in MiB; 0 = one bucket per network."),
    doc("dist.sync_check_every", "integer >= 0", "Check every this many steps that the spectral-norm vectors and batch-norm buffers agree across ranks, and re-broadcast rank 0's when they do not; 0 = never."),
    doc("dist.dump_rank_state", "true, false", "At the end, write every rank's parameters, buffers and Adam moments to <output.dir>/rank_state/ (to check that replicas are identical)."),
    doc("dist.overlap", "bool", "Start each gradient bucket's all-reduce during backward, as soon as backward has completed the bucket's gradients (last bucket first), instead of after backward. Same arithmetic, bit for bit. Needs dist.bucket_mb below a network's gradient size (more than one bucket). With Open MPI on CPUs it did not pay clearly in docs/performance.md's measurements; on CUDA the reductions are queued during backward but still run on backward's stream."),
    doc("dist.timeout_s", "number > 0", "Seconds a collective may take before the watchdog ends the whole job with a message naming the step and the operation."),
    // [output]
    doc("output.dir", "a directory", "The run directory: samples, weights, logs, checkpoints. Training into one that holds a run needs --resume or --overwrite."),
    doc("output.sample_classes", "integer >= 0", "Classes (grid rows) in sample grids and attention figures, spread evenly over all classes; 0 = all of them."),
    doc("output.samples_per_class", "integer > 0", "Samples per class (grid columns)."),
    doc("output.progress", "\"auto\", \"line\", \"plain\"", "A live progress line (step, images/s, ETA, losses) redrawn on the console after every step: \"auto\" draws it when stdout is a terminal and sagan was not started by mpirun (whose ranks always see a terminal); \"line\" always; \"plain\" never (log lines only)."),
    // [eval]
    doc("eval.enabled", "true, false", "Compute FID and IS (before the first step, every eval.every steps, at the end)."),
    doc("eval.every", "integer >= 0", "Also evaluate every this many steps during training; 0 = only at the start and the end."),
    doc("eval.at_start", "true, false", "Evaluate before the first step too, as the baseline the run should improve on."),
    doc("eval.score_g", "true, false", "At the end, score the raw G as well as G_ema (one more evaluation); both appear in summary.json and the final console lines."),
    doc("eval.num_samples", ">= 10 (IS's splits)", "Generated samples per evaluation, split over the ranks."),
    doc("eval.batch", "integer > 0", "Samples per forward pass. Sampling uses batch statistics, so every pass generates this many (the last one's surplus is dropped): compare runs at the same value."),
    doc("eval.feature_net", "\"fmnist-classifier\", \"inception\"", "The network behind FID and IS, and the suffix of the metric names. \"fmnist-classifier\": sagan's Fashion-MNIST classifier (1 channel, 32x32, 10 classes; `sagan train-classifier`), numbers named FID_fmnist_classifier, not comparable with published FIDs. \"inception\": pytorch-fid's Inception-v3 (any size, 1 or 3 channels), FID_inception, comparable with papers."),
    doc("eval.weights", "a safetensors file", "Weights of the feature network: `sagan train-classifier --out FILE` for the classifier; for Inception, pytorch-fid's pt_inception-2015-12-05-6726825d.pth converted with scripts/convert_inception.py (docs/metrics.md)."),
    doc("eval.reference_stats", "\"\" or an .npz file", "Reference statistics of the training images (pytorch-fid's .npz plus sagan's provenance). \"\": cached in fid_stats/ beside eval.weights, under a name derived from what they are computed from, recomputed when that changes. A path: used if its provenance matches this run (refused if not; a pytorch-fid file without provenance is used with a warning), computed and written there when missing."),
    doc("eval.kid", "true, false", "Also compute the Kernel Inception Distance (KID_<net>, with its standard deviation over the subsets) on the FID features, as torch-fidelity defines it: unbiased MMD² with the kernel (x·y/d + 1)³, subsets drawn with numpy's RandomState(2020). The real images are eval.num_samples training images drawn once (a fixed sample, the same for every run of the dataset); their features are computed once per run."),
    doc("eval.kid_subsets", "integer > 0", "KID's random subsets (torch-fidelity's default 100)."),
    doc("eval.kid_subset_size", "2 ..= eval.num_samples", "Generated and real samples in each KID subset (torch-fidelity's default 1000)."),
    doc("eval.precision_recall", "true, false", "Also compute improved precision and recall (Kynkaanniemi et al. 2019: precision_<net>, recall_<net>) on the FID features, against the same real sample as KID: the share of generated samples inside the real samples' k-NN balls, and of real samples inside the generated ones'. Costs a few distance matrices of eval.num_samples² entries per evaluation."),
    doc("eval.pr_k", "1 ..= eval.num_samples - 1", "The k of precision/recall's balls: each sample's radius is the distance to its k-th nearest neighbour in its own set (the paper's 3)."),
];

/// The documentation of `key`, if it is one.
pub fn find(key: &str) -> Option<&'static KeyDoc> {
    KEY_DOCS.iter().find(|d| d.key == key)
}

/// Every key of a config with its value as TOML, in `section.key` form.
pub fn flatten(cfg: &Config) -> Vec<(String, toml::Value)> {
    flatten_value(&toml::Value::try_from(cfg).expect("a config serialises"))
}

/// The same for any TOML document (a config as some earlier run saved it).
pub fn flatten_value(value: &toml::Value) -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    flatten_into("", value, &mut out);
    out
}

fn flatten_into(prefix: &str, v: &toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_into(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// A value as TOML, small and large floats in exponent form (`1e-12`, not `0.000000000001`).
pub fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(f) if *f != 0.0 && (f.abs() < 1e-3 || f.abs() >= 1e6) => {
            format!("{f:e}")
        }
        other => other.to_string(),
    }
}

fn value_of(values: &[(String, toml::Value)], key: &str) -> String {
    values
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| format!("`{}`", show(v)))
        .unwrap_or_default()
}

const INTRO: &str = "\
A run is one TOML file plus `--set section.key=value` overrides (repeatable); `sagan show-config
--config FILE` prints the merged result. Unknown keys, wrong types and invalid values are errors
that name the file and the key, or the `--set` at fault.

Relative paths (`data.path`, `data.cache_dir`, `eval.weights`, `eval.reference_stats`, `output.dir`) written in a
config file are relative to the directory of that file, as are the relative defaults the file
leaves in place; those given with `--set` are relative to the current directory. sagan makes them
absolute when it loads the config, so a run does not depend on where it is started from.
";

/// The reference of every key, as Markdown (what docs/config.md holds). With `current`, a column
/// gives that config's value of each key too.
pub fn explain(current: Option<&Config>) -> String {
    let defaults = flatten(&Config::default());
    let here = current.map(flatten);
    let mut out = String::from("# Configuration keys\n\n");
    out.push_str(
        "<!-- Generated by `sagan show-config --explain` from src/config/explain.rs; do not edit. -->\n\n",
    );
    out.push_str(INTRO);
    let mut section = "";
    for d in KEY_DOCS {
        let (sec, _) = d.key.split_once('.').expect("section.key");
        if sec != section {
            section = sec;
            out.push_str(&format!("\n## [{sec}]\n\n"));
            if here.is_some() {
                out.push_str(
                    "| key | this config | default | allowed | meaning |\n|---|---|---|---|---|\n",
                );
            } else {
                out.push_str("| key | default | allowed | meaning |\n|---|---|---|---|\n");
            }
        }
        let current = here
            .as_ref()
            .map(|v| format!(" {} |", value_of(v, d.key)))
            .unwrap_or_default();
        let path_note = if PATH_KEYS.contains(&d.key) {
            " (relative: see above)"
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{}` |{current} {} | {}{path_note} | {} |\n",
            d.key,
            value_of(&defaults, d.key),
            d.allowed,
            d.meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_key_is_documented_once_and_nothing_else() {
        let keys: Vec<String> = flatten(&Config::default())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in &keys {
            assert!(find(k).is_some(), "config key {k} has no entry in KEY_DOCS");
        }
        for d in KEY_DOCS {
            assert!(
                keys.iter().any(|k| k == d.key),
                "KEY_DOCS documents {}, which Config does not have",
                d.key
            );
            assert_eq!(
                KEY_DOCS.iter().filter(|o| o.key == d.key).count(),
                1,
                "{} twice",
                d.key
            );
        }
    }

    #[test]
    fn listed_resolutions_are_the_architecture_table() {
        let listed: Vec<i64> = find("model.resolution")
            .unwrap()
            .allowed
            .split(", ")
            .map(|r| r.parse().unwrap())
            .collect();
        assert_eq!(listed, crate::config::arch::Arch::resolutions());
    }

    #[test]
    fn listed_enum_values_parse() {
        for (key, values) in [
            ("model.attention", find("model.attention").unwrap().allowed),
            ("data.dataset", find("data.dataset").unwrap().allowed),
            ("dist.backend", find("dist.backend").unwrap().allowed),
            (
                "eval.feature_net",
                find("eval.feature_net").unwrap().allowed,
            ),
        ] {
            for v in values.split(", ") {
                let (section, name) = key.split_once('.').unwrap();
                let text = format!("[{section}]\n{name} = {v}\n");
                Config::from_toml_str(&text, "doc", &[])
                    .unwrap_or_else(|e| panic!("{key} = {v} from KEY_DOCS does not parse: {e}"));
            }
        }
    }
}
