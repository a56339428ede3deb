//! Diagnostic programs run under mpirun by the test suite (tests/distributed.rs):
//!   dist_probe grad-equivalence OUT.safetensors PER_RANK_BATCH
//!     one D step's averaged gradient on a fixed real and fake batch (global batch = ranks x PER_RANK_BATCH);
//!   dist_probe sync-bn OUT.safetensors PER_RANK_BATCH local|cross-replica
//!     G's training forward on this rank's rows of a fixed global batch, and the gradient of a
//!     fixed function of the whole batch's images, averaged over the ranks;
//!   dist_probe resync
//!     perturbs a spectral-norm u vector on rank 1 after step 4 and reports what the scheduled
//!     agreement check at step 5 repaired.
use sagan::config::Config;
use sagan::data::dataset::fashion_mnist;
use sagan::distributed::buckets::GradientBuckets;
use sagan::distributed::{job, sync};
use sagan::model::{self, BnMode, Discriminator, Generator, SnMode};
use sagan::train::{loss, Trainer};
use tch::{Kind, Tensor};

fn small_config() -> Config {
    Config::from_toml_str(
        "[model]\ng_ch = 16\nd_ch = 16\nz_dim = 32\n[train]\nbatch_size = 16\nthreads = 1\nema_start = 0\n",
        "<dist_probe>",
        &[],
    )
    .expect("valid")
}

fn main() -> sagan::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("grad-equivalence") => grad_equivalence(&args[2], args[3].parse().expect("batch")),
        Some("sync-bn") => sync_bn(&args[2], args[3].parse().expect("batch"), &args[4]),
        Some("resync") => resync(),
        _ => {
            eprintln!("usage: dist_probe grad-equivalence OUT B | dist_probe resync");
            std::process::exit(2)
        }
    }
}

fn grad_equivalence(out: &str, per_rank: i64) -> sagan::Result<()> {
    let cfg = small_config();
    let rank = job::join(&cfg)?;
    let (r, world) = (rank.comm.rank() as i64, rank.comm.size() as i64);
    let global = per_rank * world;
    tch::manual_seed(0);
    let d = Discriminator::new(&cfg.model, rank.device)?;
    sync::broadcast_from_root(rank.comm, &model::named_variables(&d.vs))?;
    let data = fashion_mnist(&cfg.data.path, "train", 32)?;
    let idx: Vec<i64> = (0..global).collect();
    let (real, real_y) = data.batch(&idx, rank.device)?;
    tch::manual_seed(1);
    let fake = Tensor::randn([global, 1, 32, 32], (Kind::Float, rank.device)).tanh();
    let fake_y = Tensor::randint(10, [global], (Kind::Int64, rank.device));
    let mine = |t: &Tensor| t.narrow(0, r * per_rank, per_rank);
    let params = model::parameters(&d.vs);
    let opt = sagan::train::adam::Adam::new(
        params
            .iter()
            .map(|(n, p)| (n.clone(), p.shallow_clone()))
            .collect(),
        1e-4,
        0.0,
        0.9,
        1e-8,
    );
    opt.zero_grad();
    d.sn.refresh(SnMode::PowerIteration);
    let (lr, lf) = loss::d_hinge(
        &d.forward(&mine(&real), &mine(&real_y)),
        &d.forward(&mine(&fake), &mine(&fake_y)),
    );
    (lr + lf).backward();
    let _ = GradientBuckets::new("D", &params, 1 << 16)?.all_reduce(rank.comm)?;
    if r == 0 {
        let grads: Vec<(String, Tensor)> = params
            .iter()
            .map(|(n, p)| (n.clone(), p.grad().copy()))
            .collect();
        let named: Vec<(&str, Tensor)> = grads
            .iter()
            .map(|(n, g)| (n.as_str(), g.shallow_clone()))
            .collect();
        Tensor::write_safetensors(&named, out)?;
    }
    job::finalize(rank.comm);
    Ok(())
}

fn resync() -> sagan::Result<()> {
    let cfg = small_config();
    let rank = job::join(&cfg)?;
    let mut t = Trainer::new(cfg, rank.comm, rank.device)?;
    for _ in 0..4 {
        t.train_step()?;
    }
    let target = "blocks.1.conv1.weight_u";

    if t.comm.rank() == 1 {
        let (_, u) = model::buffers(&t.d.vs)
            .into_iter()
            .find(|(n, _)| n == target)
            .expect("buffer exists");
        tch::no_grad(|| {
            let _ = u.shallow_clone().g_add_scalar_(1e-3);
        });
    }
    // Step 5's scheduled check (the loop's buffer-check duty) must find and repair it.
    t.train_step()?;
    t.check_buffers()?;
    let counted_at_check = t.resyncs;
    let again = t.check_buffers()?;
    t.average_bn_statistics()?;
    let fingerprints: Vec<u64> = t
        .replicated_state()
        .iter()
        .map(|(_, x)| sync::fingerprint(x))
        .collect();
    let bytes: Vec<u8> = fingerprints.iter().flat_map(|f| f.to_le_bytes()).collect();
    let identical = t.comm.all_gather_bytes(&bytes)?.iter().all(|b| *b == bytes);
    println!(
        "{}",
        serde_json::json!({ "rank": t.comm.rank(), "resyncs_at_step_5": counted_at_check, "repaired_again": again, "identical_after": identical })
    );
    job::finalize(rank.comm);
    Ok(())
}

fn sync_bn(out: &str, per_rank: i64, bn: &str) -> sagan::Result<()> {
    let toml = format!(
        "[model]\ng_ch = 16\nd_ch = 16\nz_dim = 32\ng_bn = \"{bn}\"\n[train]\nbatch_size = {}\nthreads = 1\n",
        per_rank * 2
    );
    let cfg = Config::from_toml_str(&toml, "<dist_probe>", &[])?;
    let rank = job::join(&cfg)?;
    let (r, world) = (rank.comm.rank() as i64, rank.comm.size() as i64);
    let global = per_rank * world;
    tch::manual_seed(0);
    let mut g = Generator::new(&cfg.model, rank.device)?;
    sync::broadcast_from_root(rank.comm, &model::named_variables(&g.vs))?;
    if cfg.model.g_bn == sagan::config::BnStatistics::CrossReplica {
        g.across_ranks(rank.comm);
    }
    // The same global batch and the same function of it whatever the number of ranks.
    tch::manual_seed(1);
    let z = Tensor::randn([global, 32], (Kind::Float, rank.device));
    let y = Tensor::randint(10, [global], (Kind::Int64, rank.device));
    let weights = Tensor::randn([global, 1, 32, 32], (Kind::Float, rank.device));
    let mine = |t: &Tensor| t.narrow(0, r * per_rank, per_rank);
    g.sn.refresh(SnMode::Fixed);
    let images = g.forward(&mine(&z), &mine(&y), BnMode::Train);
    let params = model::parameters(&g.vs);
    // Each rank's mean over its rows; averaged over the ranks, the mean over the global batch.
    ((&images * mine(&weights)).sum(Kind::Float) / per_rank as f64).backward();
    let _ = GradientBuckets::new("G", &params, 1 << 16)?.all_reduce(rank.comm)?;
    let mut all = Tensor::zeros([global, 1, 32, 32], (Kind::Float, rank.device));
    all.narrow(0, r * per_rank, per_rank)
        .copy_(&images.detach());
    rank.comm.all_reduce_sum(&mut all)?;
    if r == 0 {
        let mut named: Vec<(String, Tensor)> = params
            .iter()
            .map(|(n, p)| (format!("grad.{n}"), p.grad().copy()))
            .collect();
        named.push(("images".into(), all));
        for (n, t) in model::named_variables(&g.vs) {
            if n.ends_with("running_mean") || n.ends_with("running_var") {
                named.push((n, t.copy()));
            }
        }
        let refs: Vec<(&str, Tensor)> = named
            .iter()
            .map(|(n, t)| (n.as_str(), t.shallow_clone()))
            .collect();
        Tensor::write_safetensors(&refs, out)?;
    }
    job::finalize(rank.comm);
    Ok(())
}
