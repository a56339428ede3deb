//! The packed dataset format: one file that `sagan prepare` writes once and training reads through
//! positional reads, so nothing is decoded during training and memory does not grow with the
//! dataset.
//!
//! Layout (little-endian):
//! ```text
//! 0      preamble: magic "SAGANPK\n", version u32, 0 u32, header offset u64, header length u64,
//!        xxh3-64 of the header u64; zeros up to 4096
//! 4096   images: count x channels x resolution x resolution uint8, NCHW (see below)
//! ...    labels: count x u32
//! ...    header: JSON (`Header`): shape, class names, checksums, provenance
//! ```
//! NCHW, not NHWC: the model takes NCHW, so a sample is copied to its batch slot as is (a flip
//! reverses rows), and the per-batch transpose an NHWC file would need is paid once, in `prepare`.
//! It is also the order in which sagan hashes a dataset's images for FID provenance, so the
//! header can carry that hash.
//!
//! The header is at the end because only then are the count (after `--skip-bad`) and the checksums
//! known; a truncated file loses it and is refused before anything else is read. The body (images
//! and labels) is covered by an xxh3-64 per 16 MiB chunk, verified in parallel when a file is
//! opened, and by the SHA-256 of the image bytes (which FID provenance uses).
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::error::{Error, IoContext, Result};

pub const MAGIC: &[u8; 8] = b"SAGANPK\n";
/// The format version this sagan writes and reads.
pub const VERSION: u32 = 1;
/// Where the images start: one page, so every image read is page-aligned when the image size is.
pub const BODY_OFFSET: u64 = 4096;
const PREAMBLE_LEN: usize = 40;
const CHUNK_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always "NCHW uint8".
    pub layout: String,
    pub count: u64,
    pub channels: u32,
    pub resolution: u32,
    /// Label i's name (sorted folder names for an ImageFolder).
    pub class_names: Vec<String>,
    pub images_offset: u64,
    pub labels_offset: u64,
    /// Bytes per body chunk and the xxh3-64 of each, from `images_offset` to the header.
    pub chunk_bytes: u64,
    pub chunk_xxh3: Vec<u64>,
    /// SHA-256 of the image bytes in file order.
    pub images_sha256: String,
    /// What was packed and how: the input, its kind, the crop and the resize filter.
    pub source: String,
    /// Unreadable images left out by `--skip-bad`.
    pub skipped: u64,
    pub created_by: String,
}

impl Header {
    pub fn image_bytes(&self) -> u64 {
        self.channels as u64 * self.resolution as u64 * self.resolution as u64
    }
}

fn data_err(path: &Path, msg: String) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        msg,
    }
}

/// Streams images and labels into a new packed file. Nothing appears at `out` until
/// [`PackedWriter::finish`]: the file is written under a temporary name and renamed, so an
/// interrupted `prepare` never leaves a file that looks complete.
pub struct PackedWriter {
    out: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
    channels: u32,
    resolution: u32,
    labels: Vec<u32>,
    sha: Sha256,
    chunks: ChunkHasher,
}

impl PackedWriter {
    pub fn create(out: &Path, channels: u32, resolution: u32) -> Result<Self> {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        let tmp = PathBuf::from(format!("{}.tmp{}", out.display(), std::process::id()));
        let mut file = BufWriter::with_capacity(4 << 20, File::create(&tmp).at(&tmp)?);
        file.write_all(&[0u8; BODY_OFFSET as usize]).at(&tmp)?;
        Ok(Self {
            out: out.to_path_buf(),
            tmp,
            file: Some(file),
            channels,
            resolution,
            labels: Vec::new(),
            sha: Sha256::new(),
            chunks: ChunkHasher::new(CHUNK_BYTES),
        })
    }

    pub fn image_bytes(&self) -> usize {
        (self.channels * self.resolution * self.resolution) as usize
    }

    pub fn count(&self) -> u64 {
        self.labels.len() as u64
    }

    /// Appends one CHW image and its label.
    pub fn push(&mut self, chw: &[u8], label: u32) -> Result<()> {
        assert_eq!(chw.len(), self.image_bytes(), "image size");
        let file = self.file.as_mut().expect("open until finish");
        file.write_all(chw).at(&self.tmp)?;
        self.sha.update(chw);
        self.chunks.update(chw);
        self.labels.push(label);
        Ok(())
    }

    /// Writes labels and header, syncs, and renames the file into place.
    pub fn finish(
        mut self,
        class_names: Vec<String>,
        source: String,
        skipped: u64,
    ) -> Result<Header> {
        let count = self.labels.len() as u64;
        let labels: Vec<u8> = self.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
        let mut writer = self.file.take().expect("open until finish");
        writer.write_all(&labels).at(&self.tmp)?;
        self.chunks.update(&labels);
        let images_offset = BODY_OFFSET;
        let labels_offset = images_offset + count * self.image_bytes() as u64;
        let header = Header {
            layout: "NCHW uint8".into(),
            count,
            channels: self.channels,
            resolution: self.resolution,
            class_names,
            images_offset,
            labels_offset,
            chunk_bytes: CHUNK_BYTES,
            chunk_xxh3: std::mem::replace(&mut self.chunks, ChunkHasher::new(1)).finish(),
            images_sha256: hex(&std::mem::take(&mut self.sha).finalize()),
            source,
            skipped,
            created_by: format!("sagan {}", env!("CARGO_PKG_VERSION")),
        };
        let json = serde_json::to_vec(&header).expect("header serialises");
        writer.write_all(&json).at(&self.tmp)?;
        let header_offset = labels_offset + labels.len() as u64;
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .at(&self.tmp)?;
        file.write_all_at(&preamble(header_offset, &json), 0)
            .at(&self.tmp)?;
        file.sync_all().at(&self.tmp)?;
        std::fs::rename(&self.tmp, &self.out).at(&self.out)?;
        Ok(header)
    }
}

impl Drop for PackedWriter {
    fn drop(&mut self) {
        // After a successful finish the temporary name no longer exists; after an error it goes.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

fn preamble(header_offset: u64, json: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PREAMBLE_LEN);
    p.extend_from_slice(MAGIC);
    p.extend(VERSION.to_le_bytes());
    p.extend(0u32.to_le_bytes());
    p.extend(header_offset.to_le_bytes());
    p.extend((json.len() as u64).to_le_bytes());
    p.extend(xxh3_64(json).to_le_bytes());
    p
}

/// xxh3-64 of consecutive fixed-size chunks of a byte stream.
struct ChunkHasher {
    size: u64,
    filled: u64,
    current: Xxh3,
    done: Vec<u64>,
}

impl ChunkHasher {
    fn new(size: u64) -> Self {
        Self {
            size,
            filled: 0,
            current: Xxh3::new(),
            done: Vec::new(),
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = ((self.size - self.filled) as usize).min(bytes.len());
            self.current.update(&bytes[..take]);
            self.filled += take as u64;
            bytes = &bytes[take..];
            if self.filled == self.size {
                self.done.push(self.current.digest());
                self.current = Xxh3::new();
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<u64> {
        if self.filled > 0 {
            self.done.push(self.current.digest());
        }
        self.done
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An open, checked packed file. Images are read with positional reads (`pread`) into the
/// caller's buffer: any number of threads can read at once, and the process holds only the
/// batches it is building, however large the file (the kernel's page cache keeps what it can).
pub struct PackedFile {
    pub path: PathBuf,
    pub header: Header,
    file: File,
    labels: Vec<u32>,
}

impl PackedFile {
    /// Opens `path` and checks the preamble, the header and (with `verify_body`) every chunk's
    /// checksum, in parallel over `threads`. A wrong magic, another version, a truncated or
    /// damaged file is refused with a message that says which and what to do.
    pub fn open(path: &Path, verify_body: bool, threads: usize) -> Result<Self> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        let mut pre = [0u8; PREAMBLE_LEN];
        if len < BODY_OFFSET {
            return Err(data_err(
                path,
                format!("not a complete packed dataset: {len} bytes, less than its {BODY_OFFSET}-byte preamble (truncated?)"),
            ));
        }
        file.read_exact_at(&mut pre, 0).at(path)?;
        if &pre[..8] != MAGIC {
            return Err(data_err(
                path,
                "not a sagan packed dataset (bad magic); make one with `sagan prepare`".into(),
            ));
        }
        let word = |at: usize| u64::from_le_bytes(pre[at..at + 8].try_into().expect("8 bytes"));
        let version = u32::from_le_bytes(pre[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(data_err(
                path,
                format!("packed format version {version}; this sagan reads version {VERSION}: re-run `sagan prepare` with this sagan"),
            ));
        }
        let (header_offset, header_len, header_sum) = (word(16), word(24), word(32));
        if header_offset.checked_add(header_len) != Some(len) {
            return Err(data_err(
                path,
                format!(
                    "truncated or damaged: the header says the file ends at byte {}, it has {len} bytes; re-run `sagan prepare`",
                    header_offset.saturating_add(header_len)
                ),
            ));
        }
        let mut json = vec![0u8; header_len as usize];
        file.read_exact_at(&mut json, header_offset).at(path)?;
        if xxh3_64(&json) != header_sum {
            return Err(data_err(
                path,
                "header checksum mismatch: the file is damaged; re-run `sagan prepare`".into(),
            ));
        }
        let header: Header = serde_json::from_slice(&json)
            .map_err(|e| data_err(path, format!("unreadable header: {e}")))?;
        let bad = |msg: String| data_err(path, format!("inconsistent header: {msg}"));
        if header.layout != "NCHW uint8" {
            return Err(bad(format!("layout {:?}", header.layout)));
        }
        let images_end = header.images_offset + header.count * header.image_bytes();
        if header.images_offset != BODY_OFFSET
            || header.labels_offset != images_end
            || header.labels_offset + 4 * header.count != header_offset
        {
            return Err(bad(format!(
                "{} images of {} bytes and their labels do not end at byte {header_offset}",
                header.count,
                header.image_bytes()
            )));
        }
        let body = header_offset - BODY_OFFSET;
        if header.chunk_bytes == 0
            || header.chunk_xxh3.len() as u64 != body.div_ceil(header.chunk_bytes)
        {
            return Err(bad("checksum table does not cover the body".into()));
        }
        let this = Self {
            path: path.to_path_buf(),
            labels: Vec::new(),
            file,
            header,
        };
        if verify_body {
            this.verify(threads)?;
        }
        let mut raw = vec![0u8; 4 * this.header.count as usize];
        this.file
            .read_exact_at(&mut raw, this.header.labels_offset)
            .at(path)?;
        let labels: Vec<u32> = raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        let classes = this.header.class_names.len() as u32;
        if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            return Err(data_err(
                path,
                format!("image {i} has label {l}, but there are {classes} class names"),
            ));
        }
        Ok(Self { labels, ..this })
    }

    /// Checks every body chunk against its recorded xxh3, `threads` chunks at a time.
    fn verify(&self, threads: usize) -> Result<()> {
        let h = &self.header;
        let end = h.labels_offset + 4 * h.count;
        let n = h.chunk_xxh3.len();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads.clamp(1, n.max(1)))
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        let mut buf = vec![0u8; h.chunk_bytes as usize];
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if k >= n {
                                return Ok(());
                            }
                            let start = BODY_OFFSET + k as u64 * h.chunk_bytes;
                            let len = (end - start).min(h.chunk_bytes) as usize;
                            self.file
                                .read_exact_at(&mut buf[..len], start)
                                .at(&self.path)?;
                            if xxh3_64(&buf[..len]) != h.chunk_xxh3[k] {
                                let ib = h.image_bytes();
                                let first = (start - BODY_OFFSET) / ib;
                                let last = ((start + len as u64 - BODY_OFFSET) / ib).min(h.count);
                                return Err(data_err(
                                    &self.path,
                                    format!(
                                        "checksum mismatch in bytes {start}..{} (images {first}..{last} or the labels): the file is damaged; re-run `sagan prepare`",
                                        start + len as u64
                                    ),
                                ));
                            }
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("verify thread"))
                .collect()
        });
        results.into_iter().collect()
    }

    pub fn len(&self) -> usize {
        self.header.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Reads image `i` (CHW) into `out`, which must hold exactly one image.
    pub fn read_image(&self, i: usize, out: &mut [u8]) -> Result<()> {
        self.read_images(i, out)
    }

    /// Reads consecutive images from `first` into `out` (a whole number of images).
    pub fn read_images(&self, first: usize, out: &mut [u8]) -> Result<()> {
        let ib = self.header.image_bytes();
        debug_assert_eq!(out.len() as u64 % ib, 0);
        let at = self.header.images_offset + first as u64 * ib;
        self.file.read_exact_at(out, at).at(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_hasher_splits_a_stream_like_whole_chunks() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut h = ChunkHasher::new(300);
        for part in data.chunks(77) {
            h.update(part);
        }
        let want: Vec<u64> = data.chunks(300).map(xxh3_64).collect();
        assert_eq!(h.finish(), want);
    }
}
