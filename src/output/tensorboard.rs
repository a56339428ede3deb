//! TensorBoard event files, written directly: TFRecord framing around hand-encoded `Event` protos.
//!
//! Only the handful of messages TensorBoard needs for scalars, images, histograms and text are
//! encoded, so neither a protobuf runtime nor generated code is pulled in.
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tch::{Device, Kind, Tensor};

use crate::error::{Error, IoContext, Result};

/// TensorBoard reloads every 5 s by default; flushing at that pace shows progress live without a
/// syscall per logged value.
const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// The histogram dashboard resamples to 30 bins anyway, so finer buckets would only cost bytes.
pub const HISTOGRAM_BUCKETS: usize = 30;

/// `tensorflow::DataType::DT_STRING`.
const DT_STRING: u64 = 7;
/// `SummaryMetadata.DataClass.DATA_CLASS_TENSOR`.
const DATA_CLASS_TENSOR: u64 = 2;

/// Appends summaries to one `events.out.tfevents.*` file in a log directory.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
    last_flush: Instant,
    flush_interval: Duration,
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file in it, named as TensorBoard expects
    /// (`events.out.tfevents.<unix secs>.<hostname>.<pid>.sagan`).
    pub fn create(dir: impl AsRef<Path>) -> Result<EventWriter> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).at(dir)?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stem = format!(
            "events.out.tfevents.{secs}.{}.{}",
            crate::distributed::world::hostname(),
            std::process::id()
        );
        // A second writer in the same directory, process and second must not truncate the first.
        let mut attempt = 0u32;
        let (path, file) = loop {
            let name = if attempt == 0 {
                format!("{stem}.sagan")
            } else {
                format!("{stem}.{attempt}.sagan")
            };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 1000 => attempt += 1,
                Err(e) => return Err(e).at(path),
            }
        };
        let mut writer = EventWriter {
            path,
            out: BufWriter::new(file),
            last_flush: Instant::now(),
            flush_interval: DEFAULT_FLUSH_INTERVAL,
        };
        // Version 2 makes readers purge data only on an explicit restart marker, not whenever a
        // resumed run's steps go backwards.
        let header = Proto::new()
            .double(1, wall_time())
            .bytes(3, b"brain.Event:2");
        writer.write_record(&header.0)?;
        writer.flush()?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How long buffered events may wait before an `add_*` call flushes them; zero flushes every
    /// call.
    pub fn set_flush_interval(&mut self, interval: Duration) {
        self.flush_interval = interval;
    }

    pub fn add_scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<()> {
        // TensorBoard stores scalars as f32; narrowing here is what every writer does.
        let value = Proto::new().bytes(1, tag.as_bytes()).float(2, value as f32);
        self.write_summary(value, step)
    }

    /// Logs a uint8 image tensor laid out CHW (1, 2, 3 or 4 channels) or HW (grayscale), on any
    /// device.
    pub fn add_image(&mut self, tag: &str, image: &Tensor, step: i64) -> Result<()> {
        if image.kind() != Kind::Uint8 {
            return Err(self.invalid(format!(
                "image {tag:?}: expected a uint8 tensor, got {:?}",
                image.kind()
            )));
        }
        let chw = match image.size().as_slice() {
            &[_, _] => image.unsqueeze(0),
            &[_, _, _] => image.shallow_clone(),
            other => {
                return Err(self.invalid(format!(
                    "image {tag:?}: expected CHW or HW, got shape {other:?}"
                )))
            }
        };
        let (c, h, w) = chw.size3()?;
        let hwc = chw
            .to_device(Device::Cpu)
            .permute([1, 2, 0])
            .contiguous()
            .view([-1]);
        let pixels = Vec::<u8>::try_from(&hwc)?;
        let dim = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        self.add_image_hwc(tag, dim(w), dim(h), dim(c), &pixels, step)
    }

    /// Logs an image given as interleaved rows (HWC, row-major, 8 bits per sample).
    pub fn add_image_hwc(
        &mut self,
        tag: &str,
        width: u32,
        height: u32,
        channels: u32,
        pixels: &[u8],
        step: i64,
    ) -> Result<()> {
        let color = match channels {
            1 => png::ColorType::Grayscale,
            2 => png::ColorType::GrayscaleAlpha,
            3 => png::ColorType::Rgb,
            4 => png::ColorType::Rgba,
            _ => {
                return Err(self.invalid(format!(
                    "image {tag:?}: {channels} channels (1 to 4 supported)"
                )))
            }
        };
        let expected = u64::from(width) * u64::from(height) * u64::from(channels);
        // Summary.Image stores the dimensions as int32.
        let limit = i32::MAX as u32;
        if width == 0 || height == 0 || width > limit || height > limit {
            return Err(self.invalid(format!("image {tag:?}: bad size {width}x{height}")));
        }
        if pixels.len() as u64 != expected {
            return Err(self.invalid(format!(
                "image {tag:?}: {} bytes for {width}x{height}x{channels}",
                pixels.len()
            )));
        }
        let encoded =
            super::png::encode_png(width, height, color, pixels).map_err(|e| Error::Io {
                path: self.path.clone(),
                source: std::io::Error::other(format!("image {tag:?}: PNG encoding: {e}")),
            })?;
        let image = Proto::new()
            .varint(1, u64::from(height))
            .varint(2, u64::from(width))
            .varint(3, u64::from(channels))
            .bytes(4, &encoded);
        let value = Proto::new().bytes(1, tag.as_bytes()).message(4, image);
        self.write_summary(value, step)
    }

    /// Logs the distribution of `values` in [`HISTOGRAM_BUCKETS`] equal-width buckets between
    /// their minimum and maximum. Non-finite values are left out, because one NaN would make
    /// every bucket edge NaN; scalars are where divergence shows.
    pub fn add_histogram(&mut self, tag: &str, values: &[f64], step: i64) -> Result<()> {
        let histo = histogram(values);
        let value = Proto::new().bytes(1, tag.as_bytes()).message(
            5,
            Proto::new()
                .double(1, histo.min)
                .double(2, histo.max)
                .double(3, histo.num)
                .double(4, histo.sum)
                .double(5, histo.sum_squares)
                .packed_doubles(6, &histo.limits)
                .packed_doubles(7, &histo.counts),
        );
        self.write_summary(value, step)
    }

    /// Logs text (rendered as Markdown) through TensorBoard's text plugin.
    pub fn add_text(&mut self, tag: &str, text: &str, step: i64) -> Result<()> {
        let metadata = Proto::new()
            .message(1, Proto::new().bytes(1, b"text"))
            .varint(4, DATA_CLASS_TENSOR);
        // A scalar string tensor: present but empty shape.
        let tensor = Proto::new()
            .varint(1, DT_STRING)
            .message(2, Proto::new())
            .bytes(8, text.as_bytes());
        let value = Proto::new()
            .bytes(1, tag.as_bytes())
            .message(8, tensor)
            .message(9, metadata);
        self.write_summary(value, step)
    }

    pub fn flush(&mut self) -> Result<()> {
        self.last_flush = Instant::now();
        self.out.flush().at(&self.path)
    }

    fn write_summary(&mut self, value: Proto, step: i64) -> Result<()> {
        let event = Proto::new()
            .double(1, wall_time())
            .varint(2, step as u64)
            .message(5, Proto::new().message(1, value));
        self.write_record(&event.0)?;
        if self.last_flush.elapsed() >= self.flush_interval {
            self.flush()?;
        }
        Ok(())
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        record.extend_from_slice(data);
        record.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        self.out.write_all(&record).at(&self.path)
    }

    fn invalid(&self, msg: String) -> Error {
        Error::Io {
            path: self.path.clone(),
            source: std::io::Error::new(ErrorKind::InvalidInput, msg),
        }
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            eprintln!("warning: event file not fully written: {e}");
        }
    }
}

/// Rewrites an event file without the events of steps after `step` (what a resumed run will log
/// again), keeping the rest byte for byte; a record torn by a crash is dropped too. Returns how many
/// events were removed.
pub fn drop_events_after(path: &Path, step: i64) -> Result<usize> {
    let bytes = std::fs::read(path).at(path)?;
    let mut kept = Vec::with_capacity(bytes.len());
    let mut removed = 0;
    let mut at = 0;
    while let Some((record, data)) = next_record(&bytes, at) {
        at = record.end;
        if event_step(data).unwrap_or(0) <= step {
            kept.extend_from_slice(&bytes[record]);
        } else {
            removed += 1;
        }
    }
    if removed > 0 || at < bytes.len() {
        let tmp = path.with_extension("trim");
        std::fs::write(&tmp, &kept).at(&tmp)?;
        std::fs::rename(&tmp, path).at(path)?;
    }
    Ok(removed)
}

/// The TFRecord at `at`: its whole byte range and its payload, if complete and intact.
fn next_record(bytes: &[u8], at: usize) -> Option<(std::ops::Range<usize>, &[u8])> {
    let header = bytes.get(at..at + 12)?;
    let len = u64::from_le_bytes(header[..8].try_into().ok()?) as usize;
    if masked_crc32c(&header[..8]) != u32::from_le_bytes(header[8..12].try_into().ok()?) {
        return None;
    }
    let data = bytes.get(at + 12..at + 12 + len)?;
    let crc = bytes.get(at + 12 + len..at + 16 + len)?;
    (masked_crc32c(data) == u32::from_le_bytes(crc.try_into().ok()?))
        .then_some((at..at + 16 + len, data))
}

/// `Event.step` (field 2, a varint) of an encoded event, if present.
fn event_step(event: &[u8]) -> Option<i64> {
    let mut at = 0;
    let varint = |at: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *event.get(*at)?;
            *at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    while at < event.len() {
        let key = varint(&mut at)?;
        match (key >> 3, key & 7) {
            (2, 0) => return Some(varint(&mut at)? as i64),
            (_, 0) => {
                varint(&mut at)?;
            }
            (_, 1) => at += 8,
            (_, 2) => at += varint(&mut at)? as usize,
            (_, 5) => at += 4,
            _ => return None,
        }
    }
    None
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The fields of a `HistogramProto`.
#[derive(Debug, PartialEq)]
struct Histogram {
    min: f64,
    max: f64,
    num: f64,
    sum: f64,
    sum_squares: f64,
    /// Right edge of each bucket; the first bucket starts at `min`.
    limits: Vec<f64>,
    counts: Vec<f64>,
}

fn histogram(values: &[f64]) -> Histogram {
    let finite = || values.iter().copied().filter(|v| v.is_finite());
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut num, mut sum, mut sum_squares) = (0.0, 0.0, 0.0);
    for v in finite() {
        min = min.min(v);
        max = max.max(v);
        num += 1.0;
        sum += v;
        sum_squares += v * v;
    }
    if num == 0.0 {
        return Histogram {
            min: 0.0,
            max: 0.0,
            num,
            sum,
            sum_squares,
            limits: Vec::new(),
            counts: Vec::new(),
        };
    }
    if min == max {
        return Histogram {
            min,
            max,
            num,
            sum,
            sum_squares,
            limits: vec![max],
            counts: vec![num],
        };
    }
    let n = HISTOGRAM_BUCKETS;
    let span = max - min;
    let mut counts = vec![0.0; n];
    for v in finite() {
        // Multiplying before dividing keeps values on exact bucket edges in their own bucket;
        // the maximum falls in the last bucket, as with numpy's closed last bin.
        let index = ((v - min) * n as f64 / span).floor() as usize;
        counts[index.min(n - 1)] += 1.0;
    }
    let mut limits: Vec<f64> = (1..=n).map(|i| min + span * i as f64 / n as f64).collect();
    limits[n - 1] = max;
    Histogram {
        min,
        max,
        num,
        sum,
        sum_squares,
        limits,
        counts,
    }
}

/// Protobuf wire-format builder: fields are appended in call order, defaults included (proto3
/// readers accept explicit defaults, and oneof members such as `simple_value` need them).
struct Proto(Vec<u8>);

impl Proto {
    fn new() -> Proto {
        Proto(Vec::new())
    }

    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.raw_varint((u64::from(field) << 3) | u64::from(wire_type));
    }

    /// Wire type 0: int32/int64 (negative values as their 64-bit two's complement), enums.
    fn varint(mut self, field: u32, v: u64) -> Proto {
        self.key(field, 0);
        self.raw_varint(v);
        self
    }

    fn double(mut self, field: u32, v: f64) -> Proto {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn float(mut self, field: u32, v: f32) -> Proto {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Wire type 2: strings, bytes and embedded messages.
    fn bytes(mut self, field: u32, data: &[u8]) -> Proto {
        self.key(field, 2);
        self.raw_varint(data.len() as u64);
        self.0.extend_from_slice(data);
        self
    }

    fn message(self, field: u32, inner: Proto) -> Proto {
        self.bytes(field, &inner.0)
    }

    fn packed_doubles(self, field: u32, values: &[f64]) -> Proto {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.bytes(field, &data)
    }
}

const CRC32C_TABLE: [u32; 256] = {
    // Reflected Castagnoli polynomial.
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| {
        CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// TFRecord masks its checksums so that a CRC of data containing CRCs stays well distributed.
fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_after_a_step_are_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        for step in [0, 5, 10, 15] {
            w.add_scalar("x", step as f64, step).unwrap();
        }
        w.flush().unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        // A torn record at the end, as a SIGKILL mid-write leaves it.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[7, 0, 0]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(drop_events_after(&path, 5).unwrap(), 2);
        let bytes = std::fs::read(&path).unwrap();
        let mut steps = Vec::new();
        let mut at = 0;
        while let Some((r, data)) = next_record(&bytes, at) {
            at = r.end;
            steps.push(event_step(data));
        }
        assert_eq!(at, bytes.len());
        // The file header has no step; then the scalars of steps 0 and 5.
        assert_eq!(steps, vec![None, Some(0), Some(5)]);
    }

    #[test]
    fn crc32c_matches_known_vectors() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        // As tensorboard's own masked_crc32c computes it.
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn varints_and_keys_encode_as_protobuf_does() {
        assert_eq!(Proto::new().varint(1, 150).0, [0x08, 0x96, 0x01]);
        assert_eq!(
            Proto::new().bytes(2, b"testing").0,
            [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']
        );
        let negative = Proto::new().varint(2, -1i64 as u64).0;
        assert_eq!(negative.len(), 11);
        assert_eq!(negative[10], 0x01);
    }

    #[test]
    fn histogram_counts_every_finite_value_once() {
        let values: Vec<f64> = (0..=30).map(f64::from).chain([f64::NAN, 30.0]).collect();
        let h = histogram(&values);
        assert_eq!((h.min, h.max, h.num), (0.0, 30.0, 32.0));
        assert_eq!(h.limits.len(), HISTOGRAM_BUCKETS);
        assert_eq!(h.limits[0], 1.0);
        assert_eq!(h.counts[0], 1.0);
        assert_eq!(h.counts[29], 3.0);
        assert_eq!(h.counts.iter().sum::<f64>(), 32.0);
        assert_eq!(histogram(&[2.5; 4]).counts, vec![4.0]);
        assert_eq!(histogram(&[]).num, 0.0);
    }
}
