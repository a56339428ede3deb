//! `sagan prepare`: any supported input (ImageFolder, IDX, CIFAR binary) to one packed file,
//! decoded and resized in parallel over the cores.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::Instant;

use super::cifar;
use super::image_folder::{self, Listing};
use super::native::{self, Native};
use super::packed::{Header, PackedWriter};
use super::progress::Progress;
use super::resize::FILTER_NAME;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub resolution: u32,
    /// 1 (gray) or 3 (RGB).
    pub channels: u8,
    /// Leave out (and count) images that cannot be read, instead of stopping at the first.
    pub skip_bad: bool,
    pub threads: usize,
    /// Print a progress line (images/s, ETA) to stderr.
    pub progress: bool,
}

pub struct Report {
    pub header: Header,
    /// One line per image left out by `skip_bad`: its path and the reason.
    pub skipped: Vec<String>,
    pub seconds: f64,
}

/// What packing one item gives: Ok (its pixels were written to the slot) or the reason it failed.
type ItemResult = std::result::Result<(), String>;
/// Decodes item i into the slot.
type Job<'a> = dyn Fn(usize, &mut [u8]) -> ItemResult + Sync + 'a;

/// Images handed to a worker at once: large enough to amortise the hand-over, small enough that
/// the in-order writer never waits long for a straggler.
const BLOCK: usize = 32;

/// Packs `input` into `out`.
pub fn prepare(input: &Path, out: &Path, opts: &PrepareOptions) -> Result<Report> {
    if opts.channels != 1 && opts.channels != 3 {
        return Err(Error::Data {
            path: input.to_path_buf(),
            msg: format!("channels must be 1 or 3, got {}", opts.channels),
        });
    }
    match detect(input) {
        Some(native) => prepare_native(&native?, out, opts),
        None => prepare_folder(&image_folder::scan(input)?, out, opts),
    }
}

/// Packs an ImageFolder listing: every image decoded, converted, cropped and resized.
pub fn prepare_folder(listing: &Listing, out: &Path, opts: &PrepareOptions) -> Result<Report> {
    let res = opts.resolution;
    let source = format!(
        "ImageFolder {} ({} images, {} classes); {} channel(s) as Pillow's convert(), centre square crop, {FILTER_NAME} to {res}x{res}",
        listing.root.display(),
        listing.files.len(),
        listing.classes.len(),
        opts.channels
    );
    let job = |i: usize, slot: &mut [u8]| {
        image_folder::load_image(&listing.files[i].0, opts.channels, res, slot)
    };
    let label = |i: usize| listing.files[i].1;
    write_ordered(
        listing.files.len(),
        &job,
        &label,
        listing.classes.clone(),
        source,
        out,
        opts,
        &listing.root,
    )
}

fn prepare_native(native: &Native, out: &Path, opts: &PrepareOptions) -> Result<Report> {
    if native.channels != opts.channels as u32 {
        return Err(Error::Data {
            path: out.to_path_buf(),
            msg: format!(
                "{} has {} channel(s); pass --channels {}",
                native.description, native.channels, native.channels
            ),
        });
    }
    let (images, how) = native::fit_resolution(native, opts.resolution, opts.threads);
    let bytes = (native.channels * opts.resolution * opts.resolution) as usize;
    let job = |i: usize, slot: &mut [u8]| {
        slot.copy_from_slice(&images[i * bytes..(i + 1) * bytes]);
        Ok(())
    };
    let label = |i: usize| native.labels[i];
    write_ordered(
        native.len(),
        &job,
        &label,
        native.class_names.clone(),
        format!("{}; {how}", native.description),
        out,
        &PrepareOptions {
            threads: 1,
            ..opts.clone()
        },
        Path::new(&native.description),
    )
}

/// Runs `job` for items 0..n on `opts.threads` workers and writes the results in item order.
/// A failed item stops everything with its message, or with `skip_bad` is left out and counted.
#[allow(clippy::too_many_arguments)]
fn write_ordered(
    n: usize,
    job: &Job<'_>,
    label: &dyn Fn(usize) -> u32,
    class_names: Vec<String>,
    source: String,
    out: &Path,
    opts: &PrepareOptions,
    input: &Path,
) -> Result<Report> {
    let start = Instant::now();
    let mut writer = PackedWriter::create(out, opts.channels as u32, opts.resolution)?;
    let bytes = writer.image_bytes();
    let blocks = n.div_ceil(BLOCK);
    let threads = opts.threads.max(1);
    // Workers take blocks in order but finish out of order; the writer holds at most `window`
    // finished blocks, so memory stays bounded whatever a slow image does.
    let window = 4 * threads;
    let next_block = Mutex::new(0usize);
    let written = (Mutex::new(0usize), Condvar::new());
    let stop = AtomicBool::new(false);
    let mut progress = Progress::new("prepare", n as u64, opts.progress);
    let mut skipped = Vec::new();
    type Done = (usize, Vec<u8>, Vec<ItemResult>);
    let outcome: Result<()> = std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<Done>(window);
        for _ in 0..threads {
            let tx = tx.clone();
            let (next_block, written, stop) = (&next_block, &written, &stop);
            s.spawn(move || loop {
                let b = {
                    let mut next = next_block.lock().expect("lock");
                    let b = *next;
                    *next += 1;
                    b
                };
                if b >= blocks || stop.load(Ordering::Relaxed) {
                    return;
                }
                {
                    let (lock, cv) = written;
                    let mut w = lock.lock().expect("lock");
                    while b >= *w + window && !stop.load(Ordering::Relaxed) {
                        w = cv.wait(w).expect("lock");
                    }
                }
                let items = (b * BLOCK..((b + 1) * BLOCK).min(n)).collect::<Vec<_>>();
                let mut buf = vec![0u8; items.len() * bytes];
                let results = items
                    .iter()
                    .zip(buf.chunks_exact_mut(bytes))
                    .map(|(&i, slot)| job(i, slot))
                    .collect();
                if tx.send((b, buf, results)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut pending: BTreeMap<usize, (Vec<u8>, Vec<ItemResult>)> = BTreeMap::new();
        let mut next = 0usize;
        let mut done = 0u64;
        let result = (|| -> Result<()> {
            while next < blocks {
                let Ok((b, buf, results)) = rx.recv() else {
                    break;
                };
                pending.insert(b, (buf, results));
                while let Some((buf, results)) = pending.remove(&next) {
                    for (k, (r, img)) in results.iter().zip(buf.chunks_exact(bytes)).enumerate() {
                        let i = next * BLOCK + k;
                        match r {
                            Ok(()) => writer.push(img, label(i))?,
                            Err(msg) if opts.skip_bad => skipped.push(msg.clone()),
                            Err(msg) => {
                                return Err(Error::Data {
                                    path: input.to_path_buf(),
                                    msg: format!(
                                        "unreadable image {msg} (pass --skip-bad to leave such images out and count them)"
                                    ),
                                })
                            }
                        }
                        done += 1;
                    }
                    next += 1;
                    let (lock, cv) = &written;
                    *lock.lock().expect("lock") = next;
                    cv.notify_all();
                    progress.update(done);
                }
            }
            progress.finish(done);
            Ok(())
        })();
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
            written.1.notify_all();
            drop(rx);
        }
        result
    });
    outcome?;
    if writer.count() == 0 {
        return Err(Error::Data {
            path: input.to_path_buf(),
            msg: format!("no image could be read ({} skipped)", skipped.len()),
        });
    }
    let header = writer.finish(class_names, source, skipped.len() as u64)?;
    Ok(Report {
        header,
        skipped,
        seconds: start.elapsed().as_secs_f64(),
    })
}
/// What kind of native dataset `input` is, if it is one (else an ImageFolder is assumed).
pub fn detect(input: &Path) -> Option<Result<Native>> {
    if input.is_dir() {
        if input.join("data_batch_1.bin").exists() {
            return Some(cifar::cifar10_train(input));
        }
        if input.join("train.bin").exists() {
            return Some(cifar::cifar100_train(input));
        }
        for name in ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"] {
            if input.join(name).exists() {
                return Some(native::idx_pair(input, "train"));
            }
        }
        return None;
    }
    if input.extension().is_some_and(|e| e == "bin") {
        return Some(cifar::load_files(std::slice::from_ref(
            &input.to_path_buf(),
        )));
    }
    None
}
