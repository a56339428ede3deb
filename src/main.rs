use std::process::ExitCode;

use clap::Parser;

use sagan::cli::{Cli, Command};
use sagan::config::Config;
use sagan::dist::{abort, launch};
use sagan::metrics::{eval, reference};
use sagan::train::preemption::{Preemption, EXIT_PREEMPTED};
use sagan::train::run::{self, Outcome};
use sagan::train::run_dir::StartMode;
use sagan::train::Trainer;

/// The config of a command that joins the job as a rank. Where it asks for tcmalloc, this
/// process restarts on it here, before MPI, signal handlers or any thread exist.
fn load_for_a_rank(path: &std::path::Path, overrides: &[String]) -> sagan::Result<Config> {
    let cfg = Config::load(path, overrides)?;
    sagan::alloc::restart_on_configured_allocator(cfg.train.host_memory);
    Ok(cfg)
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

/// The CPUs this process may run on (its affinity).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
            let cfg = load_for_a_rank(&config, &overrides)?;
            // Before anything starts (on every rank): evaluation that cannot work stops here.
            if cfg.eval.enabled {
                eval::check_fits(&cfg)?;
            }
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
        Command::Sample {
            weights,
            out,
            tensors,
            classes,
            per_class,
            seed,
            images,
        } => {
            let request = sagan::sample::Request {
                weights: &weights,
                png: &out,
                tensors: tensors.as_deref(),
                images: images.as_deref(),
                classes: &classes,
                per_class,
                seed,
            };
            let drawn = sagan::sample::run(&request, tch::Device::Cpu)?;
            println!(
                "{} ({} at step {}): {} classes x {} samples -> {}",
                weights.display(),
                drawn.network,
                drawn.step,
                drawn.rows,
                per_class,
                out.display()
            );
            if let Some(dir) = images {
                println!("  and each sample as a PNG in {}", dir.display());
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
            let cfg = load_for_a_rank(&config, &overrides)?;
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
        Command::BenchTrain {
            config,
            overrides,
            warmup,
            steps,
            phases,
        } => {
            let cfg = load_for_a_rank(&config, &overrides)?;
            if let Some(f) = sagan::bench::train(&cfg, warmup, steps.max(1), phases)? {
                println!("{}", serde_json::to_string(&f).expect("serialisable"));
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
            out,
        } => {
            let opts = sagan::gpu_check::Options { steps, out };
            // 3: no CUDA here (the checks ran on the CPU, as a test of the command).
            return Ok(
                match sagan::gpu_check::run(load_for_a_rank(&config, &overrides)?, &opts)? {
                    "pass" => 0,
                    "no_cuda" => 3,
                    _ => 1,
                },
            );
        }
        Command::FidStats {
            config,
            overrides,
            out,
            compare,
        } => {
            if let Some(files) = compare {
                let (name, fid) = reference::compare_files(&files[0], &files[1])?;
                println!("{name} {fid:.9}");
                return Ok(0);
            }
            let cfg = load_for_a_rank(&config.expect("required by clap"), &overrides)?;
            eval::check_fits(&cfg)?;
            let rank = launch::join(&cfg)?;
            let comm = rank.comm;
            let data = sagan::data::Dataset::load(&cfg.data, &cfg.model, comm)?;
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
            let cfg = load_for_a_rank(&config, &overrides)?;
            let rank = launch::join(&cfg)?;
            // Checks the weights against the model first, then (eval::check_fits) the feature net.
            if let Some(s) = eval::evaluate_checkpoint(&cfg, rank.comm, rank.device, &checkpoint)? {
                let l = eval::label(cfg.eval.feature_net);
                let class_part = s
                    .class_accuracy
                    .map(|a| format!("  class accuracy {:.4}%", 100.0 * a))
                    .unwrap_or_default();
                println!(
                    "{}: FID_{l} {:.9}  IS_{l} {:.9} ± {:.9}{class_part}  ({} samples, {:.1} s)",
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
        Command::Prepare {
            input,
            resolution,
            out,
            channels,
            skip_bad,
            threads,
        } => {
            let opts = sagan::data::prepare::PrepareOptions {
                resolution,
                channels,
                skip_bad,
                threads: threads.unwrap_or_else(cpus),
                progress: true,
            };
            let report = sagan::data::prepare::prepare(&input, &out, &opts)?;
            for line in &report.skipped {
                eprintln!("skipped: {line}");
            }
            let h = &report.header;
            println!(
                "{} images ({} classes, {}x{}x{}) -> {} in {:.1} s ({:.0} images/s){}",
                h.count,
                h.class_names.len(),
                h.channels,
                h.resolution,
                h.resolution,
                out.display(),
                report.seconds,
                (h.count + h.skipped) as f64 / report.seconds,
                if report.skipped.is_empty() {
                    String::new()
                } else {
                    format!("; skipped {} unreadable image(s)", report.skipped.len())
                }
            );
        }
        Command::BenchData {
            dir,
            jpeg_dir,
            jpegs,
            threads,
            python,
            rss_gib,
            seconds,
        } => {
            let threads = threads.unwrap_or_else(cpus);
            let figures = sagan::data::bench::run(&sagan::data::bench::BenchOptions {
                dir,
                jpeg_dir,
                jpegs,
                threads,
                python,
                rss_gib,
                seconds,
            })?;
            println!(
                "{:<78} {:>7} {:>10} {:>12}",
                "what", "threads", "images/s", "per thread"
            );
            for f in figures {
                println!(
                    "{:<78} {:>7} {:>10.0} {:>12.0}",
                    f.what,
                    f.threads,
                    f.images_per_s,
                    f.images_per_s / f.threads as f64
                );
            }
        }
        Command::ShowConfig {
            config,
            overrides,
            explain,
        } => {
            let cfg = match &config {
                Some(path) => Some(Config::load(path, &overrides)?),
                None if overrides.is_empty() => None,
                None => Some(Config::from_toml_str("", "<defaults>", &overrides)?),
            };
            match (explain, cfg) {
                (true, cfg) => print!("{}", sagan::config_doc::explain(cfg.as_ref())),
                (false, Some(cfg)) => print!("{}", cfg.to_toml()),
                (false, None) => unreachable!("clap requires --config without --explain"),
            }
        }
    }
    Ok(0)
}
