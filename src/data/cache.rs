//! `data.dataset = "image-folder"`: the folder is packed once into `data.cache_dir` and every run
//! after that reads the packed file. The cache file's name carries a hash of everything the
//! packed pixels depend on (the folder's files, their sizes and times, the resolution, the
//! channels, the preprocessing), so a changed folder or another resolution gets its own file.
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::image_folder;
use super::packed::hex;
use super::prepare::{prepare_folder, PrepareOptions};
use super::resize::FILTER_NAME;
use crate::config::{DataConfig, ModelConfig};
use crate::distributed::Comm;
use crate::error::{Error, Result};

/// How often the waiting ranks hear from rank 0 while it packs: far below any sensible
/// `dist.timeout_s`, and a few tiny broadcasts a second cost nothing next to decoding.
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// Bumped whenever decoding, conversion, crop or resize change what a packed folder contains.
const PIPELINE: &str = "sagan-image-folder-1";

/// The cache file for `data` at the model's resolution and channels, packing it first when it
/// does not exist. Rank 0 lists and packs; the others wait. Packing ImageNet takes long, longer
/// than `dist.timeout_s`, so the ranks do not wait in one collective: rank 0 packs on a thread
/// and four times a second all ranks exchange a short status, which keeps each collective brief.
pub fn packed_folder(data: &DataConfig, model: &ModelConfig, comm: &dyn Comm) -> Result<PathBuf> {
    let (tx, rx) = std::sync::mpsc::channel::<Result<PathBuf>>();
    let mut own: Option<Result<PathBuf>> = None;
    std::thread::scope(|s| {
        if comm.rank() == 0 {
            let (data, model) = (data.clone(), model.clone());
            s.spawn(move || {
                let _ = tx.send(ensure_packed(&data, &model));
            });
        } else {
            drop(tx);
        }
        loop {
            // [2] still packing, [1] + path done, [0] + message failed.
            let mut status = Vec::new();
            if comm.rank() == 0 {
                match rx.recv_timeout(STATUS_EVERY) {
                    Ok(Ok(path)) => {
                        status = [&[1u8][..], path.to_string_lossy().as_bytes()].concat();
                        own = Some(Ok(path));
                    }
                    Ok(Err(e)) => {
                        status = [&[0u8][..], e.to_string().as_bytes()].concat();
                        own = Some(Err(e));
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => status.push(2),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        let e = Error::Data {
                            path: data.path.clone(),
                            msg: "packing stopped without a result".into(),
                        };
                        status = [&[0u8][..], e.to_string().as_bytes()].concat();
                        own = Some(Err(e));
                    }
                }
            }
            comm.broadcast_bytes(&mut status, 0)?;
            match status.split_first() {
                Some((2, _)) => continue,
                _ if comm.rank() == 0 => {
                    return own.take().expect("rank 0 decided");
                }
                Some((1, path)) => {
                    let path = PathBuf::from(String::from_utf8_lossy(path).into_owned());
                    if !path.exists() {
                        return Err(Error::Data {
                            path,
                            msg: format!(
                                "rank 0 packed {} here, but rank {} cannot see it: put data.cache_dir on a file system every node shares, or pack once with `sagan prepare` and use data.dataset = \"packed\"",
                                data.path.display(),
                                comm.rank()
                            ),
                        });
                    }
                    return Ok(path);
                }
                Some((_, msg)) => {
                    return Err(Error::Dist(format!(
                        "rank 0: {}",
                        String::from_utf8_lossy(msg)
                    )))
                }
                None => return Err(Error::Dist("rank 0 sent an empty status".into())),
            }
        }
    })
}

/// Lists the folder, names its cache file and packs it if that file is missing.
fn ensure_packed(data: &DataConfig, model: &ModelConfig) -> Result<PathBuf> {
    let listing = image_folder::scan(&data.path)?;
    let root = std::fs::canonicalize(&data.path).unwrap_or_else(|_| data.path.clone());
    let mut h = Sha256::new();
    h.update(format!(
        "{PIPELINE}\n{FILTER_NAME}\n{}\n{}x{}\n{}\n",
        root.display(),
        model.resolution,
        model.resolution,
        model.img_channels
    ));
    h.update(listing.fingerprint()?);
    let digest = hex(&h.finalize());
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "folder".into());
    let file = data.cache_dir.join(format!(
        "{name}_{}px_{}ch_{}.sagan",
        model.resolution,
        model.img_channels,
        &digest[..16]
    ));
    if file.exists() {
        eprintln!(
            "data: {} is packed in {}",
            data.path.display(),
            file.display()
        );
        return Ok(file);
    }
    if !(1..=3).contains(&model.img_channels) || model.img_channels == 2 {
        return Err(Error::Data {
            path: data.path.clone(),
            msg: format!(
                "`model.img_channels` = {}: an ImageFolder is packed as 1 (gray) or 3 (RGB) channels",
                model.img_channels
            ),
        });
    }
    eprintln!(
        "data: packing {} ({} images, {} classes) into {} (once; later runs reuse it)",
        data.path.display(),
        listing.files.len(),
        listing.classes.len(),
        file.display()
    );
    let opts = PrepareOptions {
        resolution: model.resolution as u32,
        channels: model.img_channels as u8,
        skip_bad: data.skip_bad,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        progress: true,
    };
    let report = prepare_folder(&listing, &file, &opts)?;
    if !report.skipped.is_empty() {
        eprintln!(
            "data: skipped {} unreadable image(s) (data.skip_bad):\n  {}",
            report.skipped.len(),
            report.skipped.join("\n  ")
        );
    }
    Ok(file)
}
