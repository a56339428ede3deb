use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use sagan::config::Config;
use sagan::dist::launch;
use sagan::train::{run, Trainer};

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
    /// Train a SAGAN (one process per rank under mpirun or srun).
    Train {
        #[arg(long)]
        config: PathBuf,
        /// Override a config value: --set train.steps=100 (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
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
    /// Print the effective config (defaults, file and overrides merged) as TOML.
    ShowConfig {
        #[arg(long)]
        config: PathBuf,
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run_cli(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let rank = std::env::var("OMPI_COMM_WORLD_RANK")
                .or_else(|_| std::env::var("SLURM_PROCID"))
                .map(|r| format!(" (rank {r})"))
                .unwrap_or_default();
            eprintln!("sagan: error{rank}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_cli(cli: Cli) -> sagan::Result<()> {
    match cli.command {
        Command::Train { config, overrides } => {
            let cfg = Config::load(&config, &overrides)?;
            let rank = launch::join(&cfg)?;
            let trainer = Trainer::new(cfg, rank.comm, rank.device)?;
            run::run(trainer)?;
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
        Command::BenchAllreduce { config, overrides, iters } => {
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
            println!("classifier: test accuracy {:.2}% -> {}", acc * 100.0, out.display());
        }
        Command::GpuCheck { config, overrides, steps } => {
            sagan::gpu_check::run(Config::load(&config, &overrides)?, steps)?;
        }
        Command::ShowConfig { config, overrides } => {
            print!("{}", Config::load(&config, &overrides)?.to_toml());
        }
    }
    Ok(())
}
