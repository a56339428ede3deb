//! `sagan bench-data`: how fast the data path is. The packed loader (read, flip, convert to
//! float) at 32 and 128 px, and ImageFolder decoding + crop + resize of ImageNet-sized JPEGs to
//! 128 px, each on one thread and on all cores; optionally Pillow on the same files and cores, and
//! the loader's resident memory while it reads a file larger than half the machine's memory.
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cli::BenchDataArgs;
use crate::data::dataset::Dataset;
use crate::data::image_folder;
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::packed::{PackedFile, PackedWriter};
use crate::data::partition::DistributedSampler;
use crate::data::prepare::{prepare_folder, PrepareOptions};
use crate::error::{Error, IoContext, Result};

pub struct BenchOptions {
    /// Where the synthetic files go (a temporary folder by default).
    pub dir: PathBuf,
    /// Use the JPEGs in this folder (one class subfolder) instead of writing synthetic ones.
    pub jpeg_dir: Option<PathBuf>,
    pub jpegs: usize,
    pub threads: usize,
    /// Python with Pillow: time Pillow on the same JPEGs and cores.
    pub python: Option<PathBuf>,
    /// Also read a packed file of this many GiB and report the loader's resident memory.
    pub rss_gib: f64,
    pub seconds: f64,
}

/// One figure: images/s on `threads` threads.
pub struct Figure {
    pub what: String,
    pub threads: usize,
    pub images_per_s: f64,
}

/// Deterministic noise (xorshift64*).
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A 500x375 RGB image with photograph-like statistics: smooth gradients at a few scales,
/// hard-edged discs and sensor grain; saved at JPEG quality 90 (4:2:0) it is about 100 KB, like
/// an average ImageNet training JPEG.
pub fn synthetic_photo(seed: u64, width: u32, height: u32) -> Vec<u8> {
    let mut rng = Noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let waves: Vec<[f32; 5]> = (0..8)
        .map(|k| {
            let f = 0.004 * (1 << (k / 2)) as f32;
            [
                f * (rng.unit() - 0.5) * 2.0,
                f * (rng.unit() - 0.5) * 2.0,
                rng.unit() * 6.3,
                60.0 / (1 + k / 2) as f32,
                (rng.next() % 3) as f32,
            ]
        })
        .collect();
    let discs: Vec<[f32; 6]> = (0..6)
        .map(|_| {
            [
                rng.unit() * width as f32,
                rng.unit() * height as f32,
                10.0 + rng.unit() * 70.0,
                (rng.unit() - 0.5) * 120.0,
                (rng.unit() - 0.5) * 120.0,
                (rng.unit() - 0.5) * 120.0,
            ]
        })
        .collect();
    let mut px = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let (xf, yf) = (x as f32, y as f32);
            let mut c = [128f32; 3];
            for w in &waves {
                let v = w[3] * (w[0] * xf * 6.3 + w[1] * yf * 6.3 + w[2]).sin();
                c[w[4] as usize] += v;
                c[(w[4] as usize + 1) % 3] += 0.5 * v;
            }
            for d in &discs {
                if (xf - d[0]).powi(2) + (yf - d[1]).powi(2) < d[2] * d[2] {
                    c[0] += d[3];
                    c[1] += d[4];
                    c[2] += d[5];
                }
            }
            for v in c {
                let grain = (rng.unit() - 0.5) * 64.0;
                px.push((v + grain).clamp(0.0, 255.0) as u8);
            }
        }
    }
    px
}

/// Writes `n` synthetic JPEGs into `dir/class0/`.
pub fn write_jpegs(dir: &Path, n: usize) -> Result<()> {
    let class = dir.join("class0");
    std::fs::create_dir_all(&class).at(&class)?;
    for i in 0..n {
        let path = class.join(format!("img_{i:05}.jpg"));
        if path.exists() {
            continue;
        }
        let px = synthetic_photo(i as u64, 500, 375);
        // 4:2:0 chroma subsampling, as nearly all ImageNet JPEGs (and Pillow's default).
        let image = turbojpeg::Image {
            pixels: &px[..],
            width: 500,
            pitch: 500 * 3,
            height: 375,
            format: turbojpeg::PixelFormat::RGB,
        };
        let out = turbojpeg::compress(image, 90, turbojpeg::Subsamp::Sub2x2).map_err(|e| {
            Error::Data {
                path: path.clone(),
                msg: format!("encoding: {e}"),
            }
        })?;
        let out = out.to_vec();
        std::fs::write(&path, out).at(&path)?;
    }
    Ok(())
}

/// A packed file of `n` images of `res` px (a cheap pattern: the loader's cost does not depend on
/// the pixels).
pub fn write_packed(path: &Path, n: usize, res: u32) -> Result<()> {
    let mut w = PackedWriter::create(path, 3, res)?;
    let bytes = w.image_bytes();
    let mut img = vec![0u8; bytes];
    for i in 0..n {
        for (k, v) in img.iter_mut().enumerate() {
            *v = (k ^ i) as u8;
        }
        w.push(&img, (i % 10) as u32)?;
    }
    w.finish(
        (0..10).map(|i| i.to_string()).collect(),
        "bench-data pattern".into(),
        0,
    )?;
    Ok(())
}

fn loader_rate(data: &Dataset, workers: usize, seconds: f64) -> Result<f64> {
    let batch = 64;
    let sampler = DistributedSampler::one_rank(data.len(), batch, 1);
    let opts = LoaderOptions {
        batch_per_rank: batch,
        start_batch: 0,
        prefetch: 4,
        workers,
        flip: true,
    };
    let mut loader = Loader::new(data, sampler, &opts, tch::Device::Cpu);
    for _ in 0..workers * 2 {
        loader.next_batch()?;
    }
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed().as_secs_f64() < seconds {
        loader.next_batch()?;
        n += batch;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Resident memory of this process in KiB (Linux), split into anonymous and file-backed.
pub fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:"))
}

/// Prints one row per measurement.
pub fn run(args: BenchDataArgs) -> Result<u8> {
    let threads = args.threads.unwrap_or_else(super::cpus);
    let figures = measure(&BenchOptions {
        dir: args.dir,
        jpeg_dir: args.jpeg_dir,
        jpegs: args.jpegs,
        threads,
        python: args.python,
        rss_gib: args.rss_gib,
        seconds: args.seconds,
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
    Ok(0)
}

pub fn measure(opts: &BenchOptions) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let all = opts.threads.max(1);
    // tch's own thread pool is not involved (the loader converts in Rust), but keep it out of
    // the way anyway.
    tch::set_num_threads(1);
    std::fs::create_dir_all(&opts.dir).at(&opts.dir)?;
    for (res, n) in [(32u32, 20_000usize), (128, 4_000)] {
        let path = opts.dir.join(format!("bench_{res}.sagan"));
        if !path.exists() {
            write_packed(&path, n, res)?;
        }
        let data = Dataset::from_packed(PackedFile::open(&path, true, all)?);
        for threads in [1, all] {
            figures.push(Figure {
                what: format!("packed loader {res} px (read + flip + float)"),
                threads,
                images_per_s: loader_rate(&data, threads, opts.seconds)?,
            });
            if all == 1 {
                break;
            }
        }
    }
    let jpeg_dir = match &opts.jpeg_dir {
        Some(d) => d.clone(),
        None => {
            let d = opts.dir.join("jpegs");
            write_jpegs(&d, opts.jpegs)?;
            d
        }
    };
    let listing = image_folder::scan(&jpeg_dir)?;
    let n = listing.files.len();
    // Read every file once first, so both sides time decoding, not the disk.
    for (p, _) in &listing.files {
        std::fs::read(p).at(p)?;
    }
    for threads in [1, all] {
        let out = opts.dir.join("bench_folder.sagan");
        let t = Instant::now();
        prepare_folder(
            &listing,
            &out,
            &PrepareOptions {
                resolution: 128,
                channels: 3,
                skip_bad: false,
                threads,
                progress: false,
            },
        )?;
        figures.push(Figure {
            what: "sagan prepare: JPEG 500x375 -> 128 px (decode + crop + resize + write)".into(),
            threads,
            images_per_s: n as f64 / t.elapsed().as_secs_f64(),
        });
        if all == 1 {
            break;
        }
    }
    if let Some(python) = &opts.python {
        for threads in [1, all] {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/pillow.py");
            let out = std::process::Command::new(python)
                .arg(script)
                .arg(&jpeg_dir)
                .arg(threads.to_string())
                .output()
                .at(python)?;
            let text = String::from_utf8_lossy(&out.stdout);
            let rate = text.trim().parse::<f64>().map_err(|_| Error::Data {
                path: script.into(),
                msg: format!(
                    "expected images/s, got {text:?} {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            })?;
            figures.push(Figure {
                what: "Pillow: JPEG 500x375 -> 128 px (open + convert + crop + BICUBIC resize)"
                    .into(),
                threads,
                images_per_s: rate,
            });
            if all == 1 {
                break;
            }
        }
    }
    if opts.rss_gib > 0.0 {
        rss_check(opts)?;
    }
    Ok(figures)
}

/// Reads a whole packed file of `opts.rss_gib` GiB through the loader and prints resident memory
/// (anonymous and file-backed) at the start and at its peak.
fn rss_check(opts: &BenchOptions) -> Result<()> {
    let res = 128u32;
    let image = 3 * (res * res) as usize;
    let n = (opts.rss_gib * (1u64 << 30) as f64 / image as f64) as usize;
    let path = opts.dir.join("bench_rss.sagan");
    let ok = PackedFile::open(&path, false, 1).is_ok_and(|f| f.len() == n);
    if !ok {
        eprintln!(
            "bench-data: writing {n} images ({:.1} GiB) to {}",
            opts.rss_gib,
            path.display()
        );
        write_packed(&path, n, res)?;
    }
    let data = Dataset::from_packed(PackedFile::open(&path, false, 1)?);
    let before = rss_kib();
    let batch = 256;
    let sampler = DistributedSampler::one_rank(n, batch, 3);
    let loader_opts = LoaderOptions {
        batch_per_rank: batch,
        start_batch: 0,
        prefetch: 4,
        workers: opts.threads.max(1),
        flip: true,
    };
    let mut loader = Loader::new(&data, sampler, &loader_opts, tch::Device::Cpu);
    // The first batches fill the prefetch queues (workers x prefetch batches of floats); after
    // that resident memory must stay where it is, however much of the file has been read.
    let warm_batches = 4 * loader_opts.workers * loader_opts.prefetch;
    let t = Instant::now();
    for _ in 0..warm_batches {
        drop(loader.next_batch()?);
    }
    let warm = rss_kib();
    let mut peak = warm;
    let batches = n / batch;
    for k in warm_batches..batches {
        drop(loader.next_batch()?);
        if k % 64 == 0 {
            let now = rss_kib();
            peak = (peak.0.max(now.0), peak.1.max(now.1));
        }
    }
    println!(
        "rss: read {n} images ({:.1} GiB, one epoch, {:.0} images/s): resident anonymous memory {} MiB before the loader, {} MiB once its queues were full ({warm_batches} batches of {batch}), {} MiB at most over the rest of the file; file-backed {} / {} / {} MiB",
        opts.rss_gib,
        (batches * batch) as f64 / t.elapsed().as_secs_f64(),
        before.0 / 1024,
        warm.0 / 1024,
        peak.0 / 1024,
        before.1 / 1024,
        warm.1 / 1024,
        peak.1 / 1024,
    );
    Ok(())
}
