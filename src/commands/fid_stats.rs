//! `sagan fid-stats`: a training set's reference statistics on its feature network (collective),
//! or with `--compare` the FID between two statistics files.
use crate::cli::FidStatsArgs;
use crate::data::Dataset;
use crate::distributed::{agree, job};
use crate::error::Result;
use crate::metrics::{eval, reference};

pub fn run(args: FidStatsArgs) -> Result<u8> {
    if let Some(files) = &args.compare {
        let (name, fid) = reference::compare_files(&files[0], &files[1])?;
        println!("{name} {fid:.9}");
        return Ok(0);
    }
    let config = args.config.as_deref().expect("required by clap");
    let cfg = super::load_for_a_rank(config, &args.overrides)?;
    eval::check_fits(&cfg)?;
    let rank = job::join(&cfg)?;
    let comm = rank.comm;
    let data = Dataset::load(&cfg.data, &cfg.model, comm)?;
    let net = eval::FeatureNet::load(&cfg.eval, rank.device)?;
    let (stats, path) = match args.out {
        Some(out) => {
            let provenance = reference::agreed_provenance(comm, &cfg.eval, &data)?;
            let stats = eval::dataset_stats(comm, &net, &data, cfg.eval.batch, rank.device)?;
            agree::rank0_decides_bytes(comm, || {
                reference::write_stats(&out, &stats, &provenance).map(|()| Vec::new())
            })?;
            (stats, out)
        }
        None => {
            let (stats, file) =
                reference::ensure_reference_stats(comm, &cfg.eval, &net, &data, rank.device)?;
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
    job::finalize(rank.comm);
    Ok(0)
}
