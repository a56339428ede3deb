//! Diagnostic programs for the evaluation's collectives, run under mpirun by
//! tests/eval_collectives.rs:
//!   eval_probe reference-stats DIR WEIGHTS IMAGES
//!     every rank asks for the reference statistics of the first IMAGES Fashion-MNIST training
//!     images (classifier weights WEIGHTS) at its own path DIR/rank<R>.npz, so a test can make the
//!     file exist on some ranks only; prints one JSON line per rank with checksums of the result.
//!   eval_probe gather ROOT ROUND_LIMIT LEN...
//!     rank r sends LEN[r] patterned bytes; gathers them on ROOT with MPI_Gatherv rounds of at
//!     most ROUND_LIMIT bytes, and through the Comm trait's gather_bytes; prints one JSON line per
//!     rank saying what arrived.
use std::path::PathBuf;

use sagan::config::Config;
use sagan::data::dataset::{fashion_mnist, Dataset};
use sagan::distributed::job;
use sagan::distributed::mpi::{self, plan_gather_rounds};
use sagan::distributed::Comm;
use sagan::metrics::eval::{self, FeatureNet};

fn main() -> sagan::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("reference-stats") if args.len() == 5 => reference_stats(
            PathBuf::from(&args[2]),
            PathBuf::from(&args[3]),
            args[4].parse().expect("IMAGES"),
        ),
        Some("gather") if args.len() >= 4 => gather(
            args[2].parse().expect("ROOT"),
            args[3].parse().expect("ROUND_LIMIT"),
            args[4..].iter().map(|l| l.parse().expect("LEN")).collect(),
        ),
        _ => {
            eprintln!(
                "usage: eval_probe reference-stats DIR WEIGHTS IMAGES | eval_probe gather ROOT ROUND_LIMIT LEN..."
            );
            std::process::exit(2)
        }
    }
}

fn reference_stats(dir: PathBuf, weights: PathBuf, images: i64) -> sagan::Result<()> {
    let cfg = Config::from_toml_str(
        "[train]\nthreads = 1\n[eval]\nenabled = true\nbatch = 100\n",
        "<eval_probe>",
        &[format!("eval.weights={}", weights.display())],
    )?;
    let rank = job::join(&cfg)?;
    let r = rank.comm.rank();
    let full = fashion_mnist(&cfg.data.path, "train", cfg.model.resolution)?;
    let data: Dataset = full.first(images as usize)?;
    // A per-rank path: the configs (and their hashes) stay identical, the files need not be.
    let mut eval_cfg = cfg.eval.clone();
    eval_cfg.reference_stats = dir.join(format!("rank{r}.npz"));
    let net = FeatureNet::load(&eval_cfg, rank.device)?;
    let stats = eval::reference_stats(rank.comm, &eval_cfg, &net, &data, rank.device)?;
    // Sequential sums: the same bits give the same sums in any process, whatever its threads.
    let sum = |t: &tch::Tensor| -> f64 {
        Vec::<f64>::try_from(&t.reshape([-1]))
            .expect("float64 statistics")
            .iter()
            .sum()
    };
    println!(
        "{}",
        serde_json::json!({ "rank": r, "mu_sum": sum(&stats.mu), "sigma_sum": sum(&stats.sigma) })
    );
    job::finalize(rank.comm);
    Ok(())
}

/// Byte i of rank r's payload: distinct across ranks and positions, so a misplaced byte shows.
fn pattern(rank: usize, i: usize) -> u8 {
    ((rank * 101 + i * 7 + i / 251) % 256) as u8
}

fn gather(root: usize, round_limit: usize, lens: Vec<u64>) -> sagan::Result<()> {
    let comm = mpi::init()?;
    let (r, size) = (comm.rank(), comm.size());
    assert_eq!(lens.len(), size, "one LEN per rank");
    let mine: Vec<u8> = (0..lens[r] as usize).map(|i| pattern(r, i)).collect();
    let rounds = comm.gather_bytes_in_rounds(&mine, root, round_limit)?;
    let through_trait = comm.gather_bytes(&mine, root)?;
    let expected: Vec<Vec<u8>> = (0..size)
        .map(|s| (0..lens[s] as usize).map(|i| pattern(s, i)).collect())
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "rank": r,
            "rounds_planned": plan_gather_rounds(&lens, round_limit as u64).len(),
            "received": rounds.as_ref().map(|parts| parts.iter().map(Vec::len).collect::<Vec<_>>()),
            "rounds_ok": rounds.as_ref().map(|parts| *parts == expected),
            "trait_ok": through_trait.as_ref().map(|parts| *parts == expected),
        })
    );
    drop(comm);
    mpi::finalize();
    Ok(())
}
