//! FID reference statistics and what they were computed from.
//!
//! A `.npz` of `mu` and `sigma` says nothing about its origin, and a file computed with another
//! feature network, other weights or other images gives a plausible-looking but meaningless FID.
//! So every file sagan writes carries its [`Provenance`] (inside the `.npz`, as the `provenance`
//! array: one file that cannot lose its description on a copy, still read by pytorch-fid), and a
//! file is only used when its provenance matches the run's:
//!
//! - `eval.reference_stats` empty (the default): sagan's cache, `fid_stats/` in the directory of
//!   the feature network's weights (the statistics belong to those weights, and the place does
//!   not depend on the working directory), under a name derived from the provenance
//!   ([`Provenance::cache_name`]), so configs that differ never share a file; a file there that
//!   does not match is recomputed.
//! - `eval.reference_stats` named: a mismatching file is refused with the differing fields; a
//!   file without provenance (pytorch-fid's `--save-stats`) is used with a warning saying what it
//!   must have been computed from; a missing file is computed and written there.
//!
//! The decision is rank 0's alone, broadcast to the others, so every rank takes the same branch
//! (load or compute, a collective) even when the file is visible to some ranks only.
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Tensor};

use super::features::{dataset_stats, label, FeatureNet};
use super::fid::FidStats;
use super::npz;
use crate::config::{EvalConfig, FeatureNetKind};
use crate::data::Dataset;
use crate::distributed::{agree, Comm};
use crate::error::{Error, IoContext, Result};

/// Version of what goes into reference statistics (input quantisation, resize, float64 moments
/// over every training image); bump it when that changes so old caches are recomputed.
const PROTOCOL: &str = "sagan-fid-stats/1: uint8 training images, pytorch-fid input path";

/// Where the reference statistics of a run live, and how a mismatching file is treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsFile {
    /// Derived from the provenance: sagan owns it and recomputes it when it does not match.
    Cache(PathBuf),
    /// Named by the user (`eval.reference_stats`): never overwritten when present.
    Explicit(PathBuf),
}

impl StatsFile {
    /// `eval.reference_stats` when set, else the cache path for `provenance`.
    pub fn resolve(cfg: &EvalConfig, provenance: &Provenance) -> Self {
        if cfg.reference_stats.as_os_str().is_empty() {
            let weights_dir = cfg.weights.parent().unwrap_or(Path::new(""));
            Self::Cache(weights_dir.join("fid_stats").join(provenance.cache_name()))
        } else {
            Self::Explicit(cfg.reference_stats.clone())
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::Cache(p) | Self::Explicit(p) => p,
        }
    }
}

/// What reference statistics were computed from. The dataset is identified by the SHA-256 of its
/// images as the feature network sees them (uint8 at the model's resolution), which
/// covers the dataset kind, its files, the split and the preprocessing at once; a path would not
/// notice files replaced in place, nor a different preprocessing of the same files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub protocol: String,
    /// `eval.feature_net`: "fmnist-classifier" or "inception".
    pub feature_net: String,
    /// SHA-256 of the feature network's weights file.
    pub weights_sha256: String,
    /// SHA-256 of the images' uint8 bytes (N, C, H, W, C order).
    pub images_sha256: String,
    /// Images the statistics are over (the whole training split).
    pub num_images: i64,
    pub resolution: i64,
    pub channels: i64,
}

impl Provenance {
    /// The provenance of statistics of `data` under `cfg`'s feature network: reads and hashes the
    /// weights file and the images.
    pub fn of(cfg: &EvalConfig, data: &Dataset) -> Result<Self> {
        let (n, c, h) = (data.len() as i64, data.channels(), data.resolution());
        Ok(Self {
            protocol: PROTOCOL.into(),
            feature_net: feature_net_name(cfg.feature_net).into(),
            weights_sha256: sha256_file(&cfg.weights)?,
            images_sha256: data.images_sha256()?,
            num_images: n,
            resolution: h,
            channels: c,
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("provenance serialises")
    }

    /// `<feature net>_<N>x<C>x<res>x<res>_<hash>.npz`, the hash over every field, so two configs
    /// share a file exactly when their statistics would be the same.
    pub fn cache_name(&self) -> String {
        let digest = hex(&Sha256::digest(self.to_json().as_bytes()));
        format!(
            "{}_{}x{}x{res}x{res}_{}.npz",
            self.feature_net,
            self.num_images,
            self.channels,
            &digest[..16],
            res = self.resolution,
        )
    }

    /// One line per field in which `stored` (the provenance JSON of `theirs`, e.g. "the file")
    /// differs from `self` (that of `ours`, e.g. "this run"); empty when they match. Fields are
    /// compared by name, so a file from another sagan version that lacks or adds fields shows up
    /// as differing too.
    pub fn differences(&self, stored: &str, theirs_name: &str, ours_name: &str) -> Vec<String> {
        let Ok(serde_json::Value::Object(theirs)) = serde_json::from_str(stored) else {
            return vec![format!(
                "provenance: {theirs_name} has no JSON object but {stored:?}"
            )];
        };
        let serde_json::Value::Object(ours) =
            serde_json::to_value(self).expect("provenance serialises")
        else {
            unreachable!("a struct serialises to an object")
        };
        let mut out = Vec::new();
        for (key, want) in &ours {
            match theirs.get(key) {
                Some(have) if have == want => {}
                Some(have) => out.push(format!(
                    "{key}: {theirs_name} has {have}, {ours_name} has {want}"
                )),
                None => out.push(format!(
                    "{key}: missing in {theirs_name}, {ours_name} has {want}"
                )),
            }
        }
        for key in theirs.keys().filter(|k| !ours.contains_key(*k)) {
            out.push(format!("{key}: in {theirs_name} but unknown to this sagan"));
        }
        out
    }

    /// What a file without provenance must have been computed from for its FID to mean anything.
    pub fn describe(&self, weights: &Path) -> String {
        format!(
            "{} features (weights {}, sha256 {}) of all {} training images of this run's dataset \
             ({}x{}, {} channel(s), as uint8 pixels through pytorch-fid's input path)",
            self.feature_net,
            weights.display(),
            self.weights_sha256,
            self.num_images,
            self.resolution,
            self.resolution,
            self.channels
        )
    }
}

fn feature_net_name(kind: FeatureNetKind) -> &'static str {
    match kind {
        FeatureNetKind::FmnistClassifier => "fmnist-classifier",
        FeatureNetKind::Inception => "inception",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).at(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Every rank's provenance, checked to be rank 0's: ranks whose weights or images differ would
/// mix incomparable features into one statistic. A rank that cannot compute it (weights file
/// missing on its node) fails every rank with its message instead of leaving them waiting.
pub fn agreed_provenance(comm: &dyn Comm, cfg: &EvalConfig, data: &Dataset) -> Result<Provenance> {
    let mine = Provenance::of(cfg, data);
    let msg = match &mine {
        Ok(p) => format!("ok {}", p.to_json()),
        Err(e) => format!("error {e}"),
    };
    let all = comm.all_gather_bytes(msg.as_bytes())?;
    let texts: Vec<String> = all
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let failed: Vec<String> = texts
        .iter()
        .enumerate()
        .filter_map(|(r, t)| t.strip_prefix("error ").map(|e| format!("rank {r}: {e}")))
        .collect();
    if !failed.is_empty() {
        return match mine {
            Err(e) => Err(e),
            Ok(_) => Err(Error::Dist(format!(
                "reference statistics: {}",
                failed.join("; ")
            ))),
        };
    }
    let mine = mine?;
    let json = |t: &str| t.trim_start_matches("ok ").to_string();
    let root: Provenance = serde_json::from_str(&json(&texts[0]))
        .map_err(|e| Error::Dist(format!("rank 0 sent a malformed provenance: {e}")))?;
    let differing: Vec<String> = texts
        .iter()
        .enumerate()
        .filter(|(_, t)| json(t) != json(&texts[0]))
        .map(|(r, t)| {
            root.differences(&json(t), &format!("rank {r}"), "rank 0")
                .join(", ")
        })
        .collect();
    if !differing.is_empty() {
        return Err(Error::Dist(format!(
            "the ranks see different feature-network weights or training images: {}",
            differing.join("; ")
        )));
    }
    Ok(mine)
}

/// mu and sigma as little-endian float64 bytes after their dimension.
fn stats_to_bytes(stats: &FidStats) -> Result<Vec<u8>> {
    let d = stats.mu.size()[0];
    let values = |t: &Tensor| -> Result<Vec<f64>> {
        let flat = t
            .f_to_device(Device::Cpu)?
            .f_to_kind(tch::Kind::Double)?
            .f_contiguous()?
            .f_reshape([-1])?;
        Ok(Vec::<f64>::try_from(&flat)?)
    };
    let mut out = (d as u64).to_le_bytes().to_vec();
    for v in values(&stats.mu)?.into_iter().chain(values(&stats.sigma)?) {
        out.extend(v.to_le_bytes());
    }
    Ok(out)
}

fn stats_from_bytes(bytes: &[u8]) -> Result<FidStats> {
    let bad = || {
        Error::Dist(format!(
            "malformed FID statistics message of {} bytes",
            bytes.len()
        ))
    };
    let d = u64::from_le_bytes(bytes.get(..8).ok_or_else(bad)?.try_into().expect("8")) as usize;
    if bytes.len() != 8 + 8 * (d + d * d) {
        return Err(bad());
    }
    let values: Vec<f64> = bytes[8..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let d = d as i64;
    Ok(FidStats {
        mu: Tensor::from_slice(&values[..d as usize]),
        sigma: Tensor::from_slice(&values[d as usize..]).reshape([d, d]),
    })
}

/// What rank 0 found at the statistics path.
enum Found {
    /// Statistics to use as they are.
    Use(FidStats),
    /// Compute them from the training images (and write them).
    Compute,
}

/// Rank 0's decision about `file` (see the module docs); prints why it recomputes or warns.
fn inspect(file: &StatsFile, provenance: &Provenance, cfg: &EvalConfig, dim: i64) -> Result<Found> {
    let path = file.path();
    if !path.exists() {
        println!(
            "sagan: reference statistics {} not found; computing them from the training images",
            path.display()
        );
        return Ok(Found::Compute);
    }
    let stored = npz::load_provenance(path);
    let explicit = matches!(file, StatsFile::Explicit(_));
    let problem = match &stored {
        Ok(Some(text)) => {
            let diffs = provenance.differences(text, "the file", "this run");
            if diffs.is_empty() {
                return Ok(Found::Use(load_checked(path, dim)?));
            }
            format!(
                "were computed from something other than this run's feature network and images: {}",
                diffs.join("; ")
            )
        }
        Ok(None) if explicit => {
            eprintln!(
                "sagan: warning: {} has no provenance (pytorch-fid or another tool wrote it), so \
                 sagan cannot check it; its FID is only meaningful if it holds the statistics of {}",
                path.display(),
                provenance.describe(&cfg.weights)
            );
            return Ok(Found::Use(load_checked(path, dim)?));
        }
        Ok(None) => "have no provenance".to_string(),
        Err(e) => format!("cannot be read ({e})"),
    };
    if explicit {
        return Err(Error::Data {
            path: path.to_path_buf(),
            msg: format!(
                "refusing these reference statistics (`eval.reference_stats`): they {problem}. \
                 Delete the file, point `eval.reference_stats` elsewhere, or leave it empty to \
                 use sagan's cache"
            ),
        });
    }
    println!(
        "sagan: cached reference statistics {} {problem}; recomputing them",
        path.display()
    );
    Ok(Found::Compute)
}

/// Loads statistics and checks that their dimension is the feature network's.
fn load_checked(path: &Path, dim: i64) -> Result<FidStats> {
    let stats = npz::load_fid_stats(path)?;
    let d = stats.mu.size()[0];
    if d != dim {
        return Err(Error::Data {
            path: path.to_path_buf(),
            msg: format!("statistics of {d}-d features, but the feature network gives {dim}-d"),
        });
    }
    Ok(stats)
}

/// Writes `stats` with their provenance (rank 0), creating the directory.
pub fn write_stats(path: &Path, stats: &FidStats, provenance: &Provenance) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    npz::save_fid_stats_with_provenance(path, stats, Some(&provenance.to_json()))
}

/// The reference statistics of `data` under `cfg` on every rank, and the file they live in: loaded
/// when a matching file exists (rank 0 reads it and broadcasts the values), else computed across
/// the ranks and written by rank 0. Collective: every rank must call it.
pub fn ensure_reference_stats(
    comm: &dyn Comm,
    cfg: &EvalConfig,
    net: &FeatureNet,
    data: &Dataset,
    device: Device,
) -> Result<(FidStats, StatsFile)> {
    let provenance = agreed_provenance(comm, cfg, data)?;
    let file = StatsFile::resolve(cfg, &provenance);
    let decision = agree::rank0_decides_bytes(comm, || {
        Ok(match inspect(&file, &provenance, cfg, net.dim())? {
            Found::Use(stats) => stats_to_bytes(&stats)?,
            Found::Compute => Vec::new(),
        })
    })?;
    if !decision.is_empty() {
        return Ok((stats_from_bytes(&decision)?, file));
    }
    let stats = dataset_stats(comm, net, data, cfg.batch, device)?;
    // The write's outcome is shared too: a rank 0 that cannot write fails every rank here.
    agree::rank0_decides_bytes(comm, || {
        write_stats(file.path(), &stats, &provenance).map(|()| Vec::new())
    })?;
    Ok((stats, file))
}

/// `sagan fid-stats --compare`: the Frechet distance between two statistics files and the metric's
/// name, `FID_<feature net>` when both files record the same feature network, plain `FID` when
/// either has no provenance (pytorch-fid's files). Files of different feature networks are refused:
/// their distance means nothing.
pub fn compare_files(a: &Path, b: &Path) -> Result<(String, f64)> {
    let net = |p: &Path| -> Result<Option<FeatureNetKind>> {
        Ok(npz::load_provenance(p)?
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|v| serde_json::from_value(v["feature_net"].clone()).ok()))
    };
    let name = match (net(a)?, net(b)?) {
        (Some(x), Some(y)) if x != y => {
            return Err(Error::Data {
                path: b.to_path_buf(),
                msg: format!(
                    "statistics of feature network {}, but {} holds {}'s: their distance means \
                     nothing",
                    label(y),
                    a.display(),
                    label(x)
                ),
            })
        }
        (Some(x), Some(_)) => format!("FID_{}", label(x)),
        _ => "FID".to_string(),
    };
    let fid = npz::load_fid_stats(a)?.frechet_distance(&npz::load_fid_stats(b)?)?;
    Ok((name, fid))
}
