//! One file per `sagan <command>`: each parses nothing (src/cli.rs does), runs its command and is
//! the only place that formats that command's console results. The layer above everything else.
pub mod bench_allreduce;
pub mod bench_data;
pub mod bench_train;
pub mod compare;
pub mod eval;
pub mod fid_stats;
pub mod gpu_check;
pub mod model_summary;
pub mod prepare;
pub mod sample;
pub mod scaling_model;
pub mod show_config;
pub mod sweep;
pub mod train;
pub mod train_classifier;

use std::path::Path;

use crate::cli::Command;
use crate::config::Config;
use crate::error::Result;

/// Runs one command; returns the process exit code (0, 75 after preemption, gpu-check's 1 or 3).
pub fn run(command: Command) -> Result<u8> {
    match command {
        Command::Train(a) => train::run(a),
        Command::Sample(a) => sample::run(a),
        Command::ModelSummary(a) => model_summary::run(a),
        Command::BenchAllreduce(a) => {
            bench_allreduce::run(&a.config, &a.overrides, a.iters, a.json)
        }
        Command::BenchTrain(a) => {
            bench_train::run(&a.config, &a.overrides, a.warmup, a.steps, a.phases)
        }
        Command::TrainClassifier(a) => train_classifier::run(a),
        Command::GpuCheck(a) => gpu_check::run(a),
        Command::FidStats(a) => fid_stats::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Prepare(a) => prepare::run(a),
        Command::BenchData(a) => bench_data::run(a),
        Command::ShowConfig(a) => show_config::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Compare(a) => compare::run(a),
        Command::ScalingModel(a) => scaling_model::run(a),
    }
}

/// The config of a command that joins the job as a rank. Where it asks for tcmalloc, this
/// process restarts on it here, before MPI, signal handlers or any thread exist.
fn load_for_a_rank(path: &Path, overrides: &[String]) -> Result<Config> {
    let cfg = Config::load(path, overrides)?;
    crate::host::alloc::restart_on_configured_allocator(cfg.train.host_memory);
    Ok(cfg)
}

/// The CPUs this process may run on (its affinity).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
