use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use sagan::config::Config;
use sagan::dist::{abort, launch};
use sagan::metrics::{eval, reference};
use sagan::train::preemption::{Preemption, EXIT_PREEMPTED};
use sagan::train::run::{self, Outcome};
use sagan::train::run_dir::StartMode;
use sagan::train::Trainer;

#[derive(Parser)]
#[command(
    name = "sagan",
    version,
    about = "Data-parallel Self-Attention GAN trainer on libtorch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a SAGAN (one process per rank under mpirun or srun). SIGUSR1, SIGTERM or Ctrl-C
    /// checkpoint and exit with code 75; continue with --resume.
    Train {
        /// The run's TOML config (see configs/).
        #[arg(long)]
        config: PathBuf,
        /// Override a config value: --set train.steps=100 (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
        /// Continue the run in output.dir from its newest checkpoint (or start fresh, saying so,
        /// when it has none); or from the given checkpoint directory (step_N), checkpoints
        /// directory or run directory.
        #[arg(long, value_name = "CHECKPOINT", num_args = 0..=1, conflicts_with = "overwrite")]
        resume: Option<Option<PathBuf>>,
        /// Delete the outputs of the run already in output.dir (weights, checkpoints, logs,
        /// samples), then start a new one.
        #[arg(long)]
        overwrite: bool,
    },
    /// Print parameter counts and output shapes of each config's G and D.
    ModelSummary {
        #[arg(required = true)]
        configs: Vec<PathBuf>,
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Time gradient averaging (bucketed) against a raw all-reduce of the same bytes; run under
    /// mpirun with 2 or more ranks.
    BenchAllreduce {
        #[arg(long)]
        config: PathBuf,
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
        #[arg(long, default_value_t = 20)]
        iters: usize,
    },
    /// Train the small Fashion-MNIST classifier used as the feature network of the default's
    /// FID and IS (reproducible: fixed seed); prints its test accuracy.
    TrainClassifier {
        #[arg(long, default_value = ".cache/fmnist_classifier.safetensors")]
        out: PathBuf,
        #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
        data: PathBuf,
        #[arg(long, default_value_t = 4)]
        epochs: i64,
    },
    /// On a GPU machine: a few CUDA training steps and a checked NCCL all-reduce (launch/gpu-check.sh).
    GpuCheck {
        #[arg(long, default_value = "configs/fmnist32.toml")]
        config: PathBuf,
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
        #[arg(long, default_value_t = 20)]
        steps: i64,
    },
    /// Reference statistics of the config's training set on its feature network, written as a
    /// pytorch-fid .npz (mu, sigma, and the provenance sagan checks); or, with --compare, the FID
    /// between two such files.
    FidStats {
        #[arg(long, required_unless_present = "compare")]
        config: Option<PathBuf>,
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
        /// Compute afresh and write here. Without it, make sure the file a run would use
        /// (`eval.reference_stats`, or sagan's cache when that is empty) exists and matches.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Two .npz files (ours or pytorch-fid's): print the Frechet distance between them.
        #[arg(long, num_args = 2, value_names = ["A", "B"])]
        compare: Option<Vec<PathBuf>>,
    },
    /// FID and IS of a trained G_ema (e.g. runs/fmnist32/G_ema.safetensors), across ranks.
    Eval {
        #[arg(long)]
        config: PathBuf,
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
        #[arg(long)]
        checkpoint: PathBuf,
    },
    /// Print the effective config (defaults, file and overrides merged) as TOML.
    ShowConfig {
        #[arg(long)]
        config: PathBuf,
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
    },
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "sagan: error{}: internal error: {}{at}",
            abort::rank_suffix(),
            sagan::error::strip_cpp_backtrace(&payload)
        );
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
        // Whatever thread this is, the other ranks must not wait for this one.
        abort::abort_job(1);
    }));
    match run_cli(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sagan: error{}: {e}", abort::rank_suffix());
            abort::abort_job(1)
        }
    }
}

/// Runs one command; returns the process exit code (0, or 75 after preemption).
fn run_cli(cli: Cli) -> sagan::Result<u8> {
    match cli.command {
        Command::Train {
            config,
            overrides,
            resume,
            overwrite,
        } => {
            let cfg = Config::load(&config, &overrides)?;
            let mode = match (resume, overwrite) {
                (Some(path), _) => StartMode::Resume(path),
                (None, true) => StartMode::Overwrite,
                (None, false) => StartMode::Fresh,
            };
            let preemption = Preemption::install()?;
            let rank = launch::join(&cfg)?;
            let trainer = Trainer::new(cfg, rank.comm, rank.device)?;
            let outcome = run::run(trainer, mode, preemption)?;
            launch::finalize(rank.comm);
            if let Outcome::Preempted { .. } = outcome {
                return Ok(EXIT_PREEMPTED as u8);
            }
        }
        Command::ModelSummary { configs, overrides } => {
            println!(
                "{:<28} {:>12} {:>12} {:>18} {:>8} {:>5} {:>5}",
                "config", "G params", "D params", "G output", "D out", "G att", "D att"
            );
            for path in configs {
                let cfg = Config::load(&path, &overrides)?;
                let s = sagan::summary::summarise(&cfg)?;
                println!(
                    "{:<28} {:>12} {:>12} {:>18} {:>8} {:>5} {:>5}",
                    path.display(),
                    s.g_params,
                    s.d_params,
                    format!("{:?}", s.g_output),
                    format!("{:?}", s.d_output),
                    s.g_attention,
                    s.d_attention
                );
            }
        }
        Command::BenchAllreduce {
            config,
            overrides,
            iters,
        } => {
            let cfg = Config::load(&config, &overrides)?;
            if let Some(f) = sagan::bench::all_reduce(&cfg, iters)? {
                let gbs = |s: f64| f.bytes as f64 / s / 1e9;
                println!(
                    "all-reduce of {:.2} MB (G+D gradients): bucketed path {:.3} ms ({:.3} GB/s), raw MPI_Allreduce {:.3} ms ({:.3} GB/s)",
                    f.bytes as f64 / 1e6,
                    f.bucketed_seconds * 1e3,
                    gbs(f.bucketed_seconds),
                    f.raw_seconds * 1e3,
                    gbs(f.raw_seconds)
                );
            }
        }
        Command::TrainClassifier { out, data, epochs } => {
            let acc = sagan::metrics::classifier::train(&data, &out, epochs, tch::Device::Cpu)?;
            println!(
                "classifier: test accuracy {:.2}% -> {}",
                acc * 100.0,
                out.display()
            );
        }
        Command::GpuCheck {
            config,
            overrides,
            steps,
        } => {
            sagan::gpu_check::run(Config::load(&config, &overrides)?, steps)?;
        }
        Command::FidStats {
            config,
            overrides,
            out,
            compare,
        } => {
            if let Some(files) = compare {
                let a = sagan::metrics::load_fid_stats(&files[0])?;
                let b = sagan::metrics::load_fid_stats(&files[1])?;
                println!("FID {:.9}", a.frechet_distance(&b)?);
                return Ok(0);
            }
            let cfg = Config::load(&config.expect("required by clap"), &overrides)?;
            let rank = launch::join(&cfg)?;
            let comm = rank.comm;
            let data = sagan::data::Dataset::load(&cfg.data, &cfg.model)?;
            let net = eval::FeatureNet::load(&cfg.eval, rank.device)?;
            let (stats, path) = match out {
                Some(out) => {
                    let provenance = reference::agreed_provenance(comm, &cfg.eval, &data)?;
                    let stats =
                        eval::dataset_stats(comm, &net, &data, cfg.eval.batch, rank.device)?;
                    sagan::dist::agree::rank0_decides_bytes(comm, || {
                        reference::write_stats(&out, &stats, &provenance).map(|()| Vec::new())
                    })?;
                    (stats, out)
                }
                None => {
                    let (stats, file) = reference::ensure_reference_stats(
                        comm,
                        &cfg.eval,
                        &net,
                        &data,
                        rank.device,
                    )?;
                    (stats, file.path().to_path_buf())
                }
            };
            if comm.rank() == 0 {
                println!(
                    "{} images -> {} ({}-d, {})",
                    data.len(),
                    path.display(),
                    stats.dim(),
                    net.label()
                );
            }
            launch::finalize(rank.comm);
        }
        Command::Eval {
            config,
            overrides,
            checkpoint,
        } => {
            let cfg = Config::load(&config, &overrides)?;
            let rank = launch::join(&cfg)?;
            if let Some(s) = eval::evaluate_checkpoint(&cfg, rank.comm, rank.device, &checkpoint)? {
                println!(
                    "{}: FID {:.9}  IS {:.9} ± {:.9}  ({} samples, {:.1} s)",
                    checkpoint.display(),
                    s.fid,
                    s.is_mean,
                    s.is_std,
                    s.samples,
                    s.seconds
                );
            }
            launch::finalize(rank.comm);
        }
        Command::ShowConfig { config, overrides } => {
            print!("{}", Config::load(&config, &overrides)?.to_toml());
        }
    }
    Ok(0)
}
