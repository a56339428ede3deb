//! The command line (clap). Kept in the library so that tests can check it (every option has help
//! text); `src/main.rs` runs what it parses.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "sagan",
    version,
    about = "Data-parallel Self-Attention GAN trainer on libtorch",
    after_help = "Relative paths inside a config file are relative to that file's directory; paths \
                  given with --set or as options are relative to the current directory."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train a SAGAN (one process per rank under mpirun or srun). SIGUSR1, SIGTERM or Ctrl-C
    /// checkpoint and exit with code 75; continue with --resume.
    Train(TrainArgs),
    /// Sample from a trained generator (G_ema.safetensors or G.safetensors of a run): a labelled
    /// grid, one row per class. The model comes from the file's own metadata; no config needed.
    Sample(SampleArgs),
    /// Print parameter counts and output shapes of each config's G and D.
    ModelSummary(ModelSummaryArgs),
    /// Time gradient averaging (bucketed) against a raw all-reduce of the same bytes; run under
    /// mpirun with 2 or more ranks.
    BenchAllreduce(BenchAllreduceArgs),
    /// Time training steps of a config, writing nothing (run under mpirun for more ranks): prints
    /// one JSON line with the median step, images/s, the all-reduce share, each rank's peak RSS
    /// and, with --phases, where the step's time goes. bench/side_by_side.py runs it against a
    /// PyTorch implementation of the same model.
    BenchTrain(BenchTrainArgs),
    /// Train the small Fashion-MNIST classifier used as the feature network of the default's
    /// FID and IS (reproducible: fixed seed); prints its test accuracy.
    TrainClassifier(TrainClassifierArgs),
    /// On a GPU machine: every CUDA path checked, with a JSON and markdown report (launch/gpu-check.sh);
    /// without CUDA the checks run on the CPU and the verdict is "no_cuda" (exit code 3).
    GpuCheck(GpuCheckArgs),
    /// Reference statistics of the config's training set on its feature network, written as a
    /// pytorch-fid .npz (mu, sigma, and the provenance sagan checks); or, with --compare, the FID
    /// between two such files.
    FidStats(FidStatsArgs),
    /// FID and IS of a trained generator (e.g. runs/fmnist32/G_ema.safetensors), across ranks,
    /// named for the feature network (FID_fmnist_classifier, FID_inception).
    Eval(EvalArgs),
    /// Pack a dataset into one file that training reads without decoding: an ImageFolder (one
    /// subfolder per class, JPEG/PNG), an IDX folder (Fashion-MNIST, MNIST) or CIFAR-10/100
    /// binaries. Use it with data.dataset = "packed", data.path = OUT.
    Prepare(PrepareArgs),
    /// Measure the data path: packed loader images/s at 32 and 128 px, ImageFolder decoding of
    /// 500x375 JPEGs to 128 px, on one thread and on all; optionally Pillow on the same files.
    BenchData(BenchDataArgs),
    /// Train a grid of configs over seeds, each an ordinary run directory under --out: one after
    /// another here (started again, it skips finished runs and resumes the unfinished one), or
    /// as one Slurm job array with --slurm. Compare the arms with `sagan compare`.
    Sweep(SweepArgs),
    /// Tables of the runs' end and best FID, IS and class accuracy per arm (runs that differ only
    /// by seed), mean and standard deviation over seeds and a 95% Welch interval of each arm's
    /// difference from the first; writes compare.md, compare.csv and compare.png.
    Compare(CompareArgs),
    /// Fits the ring all-reduce model to bench/allreduce_scaling.sh's measurements, checks it
    /// against measured steps, and predicts a config's step on a GPU cluster; writes
    /// scaling.md, allreduce_fit.csv, allreduce.png and cluster.png (docs/scaling.md).
    ScalingModel(ScalingModelArgs),
    /// Print the effective config (defaults, file and overrides merged) as TOML; with --explain,
    /// every key with its meaning, default and allowed values (docs/config.md).
    ShowConfig(ShowConfigArgs),
}

#[derive(Args)]
pub struct TrainArgs {
    /// The run's TOML config (see configs/; every key: `sagan show-config --explain`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override a config value, e.g. --set train.steps=100 (repeatable). A relative path given
    /// here is relative to the current directory.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue the run in output.dir from its newest checkpoint (or start fresh, saying so,
    /// when it has none); or from the given checkpoint directory (step_N), checkpoints
    /// directory or run directory.
    #[arg(long, value_name = "CHECKPOINT", num_args = 0..=1, conflicts_with = "overwrite")]
    pub resume: Option<Option<PathBuf>>,
    /// Delete the outputs of the run already in output.dir (weights, checkpoints, logs,
    /// samples), then start a new one.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Args)]
pub struct SampleArgs {
    /// The generator's weights file, as sagan writes it (with its config in the metadata).
    #[arg(long, visible_alias = "checkpoint", value_name = "FILE")]
    pub weights: PathBuf,
    /// Where to write the grid (PNG).
    #[arg(long, value_name = "PNG", default_value = "samples.png")]
    pub out: PathBuf,
    /// Also write the noise z, the labels y and the images (float, in [-1, 1]) as safetensors,
    /// to compare with another implementation (examples/load_g_ema.py --check).
    #[arg(long, value_name = "FILE")]
    pub tensors: Option<PathBuf>,
    /// Classes to draw, one row each (e.g. --classes 0,3,7); default: output.sample_classes
    /// classes spread over all of them, as in training.
    #[arg(
        long,
        visible_alias = "class",
        value_delimiter = ',',
        value_name = "CLASS,..."
    )]
    pub classes: Vec<i64>,
    /// Samples per class (grid columns).
    #[arg(long, visible_alias = "n", default_value_t = 8)]
    pub per_class: i64,
    /// Also write every sample as its own PNG in this directory (created if needed), named
    /// by class and column: `class3_dress_007.png`.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The truncation trick: noise values with |z| > T are drawn again, trading variety for
    /// samples nearer the mode (smaller T: less varied). Default: no truncation.
    #[arg(long, value_name = "T")]
    pub truncation: Option<f64>,
    /// Interpolation rows instead of independent samples: `z` moves the noise from one latent
    /// to another within each class's row; `class` keeps one latent per row and moves the class
    /// from each chosen class to the next. --per-class is the number of steps.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub interpolate: Option<Interpolate>,
    /// Also write the images as an .npz for external evaluators: `arr_0` uint8 [N, H, W, C]
    /// (what TensorFlow-based FID/IS/precision-recall suites read) and, for class rows,
    /// `labels` int64 [N].
    #[arg(long, value_name = "FILE")]
    pub npz: Option<PathBuf>,
}

/// What `sagan sample --interpolate` moves along each row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Interpolate {
    /// The noise, between two latents, within one class.
    Z,
    /// The class, between consecutive chosen classes, with the noise fixed.
    Class,
}

#[derive(Args)]
pub struct SweepArgs {
    /// The base config every run starts from.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The grid: [[arm]] tables (name, set) and a [cross] table of values to cross (see
    /// docs/experiments.md; configs/sweeps/ has the ablations').
    #[arg(long, value_name = "GRID.TOML")]
    pub grid: PathBuf,
    /// Seeds per arm: the base config's train.seed and the next ones.
    #[arg(long, default_value_t = 1)]
    pub seeds: usize,
    /// The sweep's directory: sweep.json and one run directory per arm and seed
    /// (<out>/<arm>/seed<S>).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Override a config value in every run (repeatable), before the arm's own.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print the runs and the commands that would train them; write and start nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Ranks per run when running here: more than 1 runs each under `mpirun -np N`.
    #[arg(long, default_value_t = 1, conflicts_with = "slurm")]
    pub ranks: usize,
    /// Submit the unfinished runs as one Slurm job array of launch/slurm/train.sbatch tasks
    /// (run from the repository root).
    #[arg(long)]
    pub slurm: bool,
    /// An sbatch option for every task, e.g. --sbatch-arg=--nodes=2 (repeatable; with --slurm).
    #[arg(
        long = "sbatch-arg",
        value_name = "OPTION",
        allow_hyphen_values = true,
        requires = "slurm"
    )]
    pub sbatch_args: Vec<String>,
}

#[derive(Args)]
pub struct CompareArgs {
    /// Sweep directories, run directories, or directories holding runs.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where compare.md, compare.csv and compare.png go (default: the one DIR given).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct ScalingModelArgs {
    /// JSON lines of bench/allreduce_scaling.sh.
    #[arg(long, value_name = "FILE")]
    pub measurements: PathBuf,
    /// JSON lines of bench/overlap_nodes.sh --out: training steps to check the model against.
    #[arg(long, value_name = "FILE")]
    pub steps: Option<PathBuf>,
    /// The config whose G and D the cluster prediction averages (its widths set the compute).
    #[arg(long, value_name = "FILE", default_value = "configs/imagenet128.toml")]
    pub config: PathBuf,
    /// Where the report goes.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct ModelSummaryArgs {
    /// One or more TOML configs.
    #[arg(required = true, value_name = "CONFIG")]
    pub configs: Vec<PathBuf>,
    /// Override a config value in every config (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
}

#[derive(Args)]
pub struct BenchAllreduceArgs {
    /// The TOML config whose G and D gradients are averaged.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Timed repetitions of each all-reduce.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// One JSON line instead of the sentence: ranks, bytes, buckets and both medians
    /// (bench/allreduce_scaling.sh reads it).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BenchTrainArgs {
    /// The TOML config to train.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: i64,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: i64,
    /// Also time each phase of the step (forwards, backwards, optimiser, EMA...).
    #[arg(long)]
    pub phases: bool,
}

#[derive(Args)]
pub struct TrainClassifierArgs {
    /// Where to write the classifier's weights (safetensors).
    #[arg(
        long,
        value_name = "FILE",
        default_value = ".cache/fmnist_classifier.safetensors"
    )]
    pub out: PathBuf,
    /// Directory of the Fashion-MNIST IDX files.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/usr/share/datasets/fashion-mnist"
    )]
    pub data: PathBuf,
    /// Training epochs (0: untrained weights, for tests).
    #[arg(long, default_value_t = 4)]
    pub epochs: i64,
}

#[derive(Args)]
pub struct GpuCheckArgs {
    /// The TOML config to train.
    #[arg(long, value_name = "FILE", default_value = "configs/fmnist32.toml")]
    pub config: PathBuf,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Training steps to time.
    #[arg(long, default_value_t = 20)]
    pub steps: i64,
    /// Directory for gpu-check.json and gpu-check.md, rewritten after every check.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct FidStatsArgs {
    /// The TOML config whose data and feature network (eval.*) are used.
    #[arg(long, value_name = "FILE", required_unless_present = "compare")]
    pub config: Option<PathBuf>,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Compute afresh and write here. Without it, make sure the file a run would use
    /// (`eval.reference_stats`, or sagan's cache when that is empty) exists and matches.
    #[arg(long, value_name = "NPZ")]
    pub out: Option<PathBuf>,
    /// Two .npz files (ours or pytorch-fid's): print the Frechet distance between them. Takes
    /// no config: --config, --set and --out are refused with it.
    #[arg(
        long,
        num_args = 2,
        value_names = ["A", "B"],
        conflicts_with_all = ["config", "overrides", "out"]
    )]
    pub compare: Option<Vec<PathBuf>>,
}

#[derive(Args)]
pub struct EvalArgs {
    /// The TOML config (its model must match the weights; eval.* says how to score).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// The generator's weights (G_ema.safetensors or G.safetensors).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
}

#[derive(Args)]
pub struct PrepareArgs {
    /// The dataset: a folder (ImageFolder, IDX or CIFAR) or a CIFAR .bin file.
    #[arg(long)]
    pub input: PathBuf,
    /// Side of the square images (the model's resolution): centre crop, then an
    /// antialiased bicubic resize (28x28 IDX images are zero-padded to 32 instead).
    #[arg(long)]
    pub resolution: u32,
    /// The packed file to write (replaced if it exists).
    #[arg(long)]
    pub out: PathBuf,
    /// 3 (RGB) or 1 (gray) channels; IDX data is gray, CIFAR RGB.
    #[arg(long, default_value_t = 3)]
    pub channels: u8,
    /// Leave out images that cannot be read (listed and counted) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Decoding threads (default: the CPUs this process may use).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args)]
pub struct BenchDataArgs {
    /// Folder for the synthetic files (kept, so a second run starts at once).
    #[arg(long, default_value = ".cache/bench-data")]
    pub dir: PathBuf,
    /// Time these JPEGs (a folder with class subfolders) instead of synthetic ones.
    #[arg(long)]
    pub jpeg_dir: Option<PathBuf>,
    /// Synthetic JPEGs to write.
    #[arg(long, default_value_t = 400)]
    pub jpegs: usize,
    /// Threads for the "all cores" figures (default: the CPUs this process may use).
    #[arg(long)]
    pub threads: Option<usize>,
    /// A Python with Pillow (e.g. .venv/bin/python): also time Pillow on the same JPEGs.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Also read a packed file of this many GiB through the loader and report resident
    /// memory (0 = skip).
    #[arg(long, default_value_t = 0.0)]
    pub rss_gib: f64,
    /// Seconds per loader figure.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
}

#[derive(Args)]
pub struct ShowConfigArgs {
    /// The TOML config (optional with --explain).
    #[arg(long, value_name = "FILE", required_unless_present = "explain")]
    pub config: Option<PathBuf>,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Document every key (meaning, default, allowed values) as Markdown, with this config's
    /// values when --config is given.
    #[arg(long)]
    pub explain: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option and argument of every command says what it is for.
    #[test]
    fn every_option_has_help_text() {
        let cli = Cli::command();
        let mut missing = Vec::new();
        for sub in cli.get_subcommands() {
            if sub.get_about().is_none() {
                missing.push(format!("command {}", sub.get_name()));
            }
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("{} {id}", sub.get_name()));
                }
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn compare_refuses_the_options_it_would_ignore() {
        for extra in [
            &["--config", "c.toml"][..],
            &["--out", "x.npz"],
            &["--set", "eval.batch=10"],
        ] {
            let mut args = vec!["sagan", "fid-stats", "--compare", "a.npz", "b.npz"];
            args.extend_from_slice(extra);
            let err = Cli::try_parse_from(&args).err().map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("cannot be used with")),
                "{args:?} was accepted: {err:?}"
            );
        }
        assert!(Cli::try_parse_from(["sagan", "fid-stats", "--compare", "a.npz", "b.npz"]).is_ok());
    }
}
