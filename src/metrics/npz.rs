//! FID reference statistics in pytorch-fid's `.npz` format: a zip holding `mu.npy` (float64 `[d]`)
//! and `sigma.npy` (float64 `[d, d]`).
//!
//! We write stored (uncompressed) members, which `np.load` reads like any `np.savez` output; we
//! read stored and deflated ones, since pytorch-fid's `--save-stats` uses `np.savez_compressed`.
//!
//! Files sagan writes for a run also hold `provenance.npy`: a uint8 array of UTF-8 JSON saying what
//! the statistics were computed from (see `metrics::reference`). Readers that only take `mu` and
//! `sigma` (pytorch-fid, torch-fidelity) ignore it; uint8 rather than a numpy string dtype keeps it
//! readable with `allow_pickle=False` and `bytes(f['provenance']).decode()`.
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::fid::FidStats;
use crate::error::{Error, IoContext, Result};

const MAGIC: &[u8] = b"\x93NUMPY";
/// numpy pads headers so the data starts on this boundary, which lets it memory-map the array.
const ALIGN: usize = 64;

fn data_error(path: &Path, msg: String) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        msg,
    }
}

/// An array read from a `.npy`: its shape and its values widened to f64, in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Name of the array that holds the provenance JSON.
const PROVENANCE: &str = "provenance";

/// A `.npy` v1.0 file for a C-ordered little-endian float64 array.
pub fn encode_npy_f64(shape: &[usize], data: &[f64]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "npy shape and data disagree"
    );
    let payload: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode_npy("<f8", shape, &payload)
}

/// A `.npy` v1.0 file for a one-dimensional uint8 array.
pub fn encode_npy_u8(data: &[u8]) -> Vec<u8> {
    encode_npy_u8_shaped(&[data.len()], data)
}

/// A `.npy` v1.0 file for a C-ordered uint8 array of `shape` (images, for external evaluators).
pub fn encode_npy_u8_shaped(shape: &[usize], data: &[u8]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "npy shape and data disagree"
    );
    encode_npy("|u1", shape, data)
}

/// A `.npy` v1.0 file for a one-dimensional little-endian int64 array.
pub fn encode_npy_i64(data: &[i64]) -> Vec<u8> {
    let payload: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode_npy("<i8", &[data.len()], &payload)
}

/// A `.npy` v1.0 file: header for `descr` and `shape` (C order), then `payload` as is.
fn encode_npy(descr: &str, shape: &[usize], payload: &[u8]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // magic (6) + version (2) + header length (2) + header + '\n', padded to ALIGN with spaces.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((ALIGN - unpadded % ALIGN) % ALIGN));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// The value text after `'key':` in a numpy header dict.
fn header_value<'a>(header: &'a str, key: &str) -> std::result::Result<&'a str, String> {
    let found = [format!("'{key}'"), format!("\"{key}\"")]
        .iter()
        .find_map(|quoted| header.find(quoted.as_str()).map(|at| at + quoted.len()));
    let at = found.ok_or_else(|| format!("header has no '{key}': {header}"))?;
    let rest = header[at..].trim_start();
    rest.strip_prefix(':')
        .map(str::trim_start)
        .ok_or_else(|| format!("malformed header near '{key}': {header}"))
}

fn parse_header(header: &str) -> std::result::Result<(String, bool, Vec<usize>), String> {
    let descr = header_value(header, "descr")?;
    let quote = descr.chars().next().filter(|c| *c == '\'' || *c == '"');
    let descr = quote
        .and_then(|q| descr[1..].split(q).next())
        .ok_or_else(|| format!("malformed 'descr' in header: {header}"))?
        .to_string();
    let fortran = header_value(header, "fortran_order")?;
    let fortran = if fortran.starts_with("True") {
        true
    } else if fortran.starts_with("False") {
        false
    } else {
        return Err(format!("malformed 'fortran_order' in header: {header}"));
    };
    let shape = header_value(header, "shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format!("malformed 'shape' in header: {header}"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("malformed 'shape' in header ({e}): {header}"))?;
    Ok((descr, fortran, shape))
}

/// Reads a `.npy` holding float64 or float32 (either byte order, C or Fortran order), the dtypes
/// FID statistics come in; anything else is an error naming the dtype found.
pub fn decode_npy(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    let (descr, fortran, shape, payload) = split_npy(bytes)?;
    let count: usize = shape.iter().product();
    let item = match descr.as_str() {
        "<f8" | ">f8" => 8,
        "<f4" | ">f4" => 4,
        other => return Err(format!("dtype '{other}', expected float64 ('<f8')")),
    };
    if payload.len() != count * item {
        return Err(format!(
            "shape {shape:?} of '{descr}' needs {} bytes of data, found {}",
            count * item,
            payload.len()
        ));
    }
    let big = descr.starts_with('>');
    let data: Vec<f64> = if item == 8 {
        payload
            .chunks_exact(8)
            .map(|c| {
                let b: [u8; 8] = c.try_into().expect("chunk of 8");
                if big {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                }
            })
            .collect()
    } else {
        payload
            .chunks_exact(4)
            .map(|c| {
                let b: [u8; 4] = c.try_into().expect("chunk of 4");
                f64::from(if big {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                })
            })
            .collect()
    };
    let data = if fortran && shape.len() > 1 {
        to_c_order(&shape, &data)
    } else {
        data
    };
    Ok(NpyArray { shape, data })
}

/// Reads a `.npy` holding a one-dimensional uint8 array (numpy's `'|u1'`).
pub fn decode_npy_u8(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let (descr, _, shape, payload) = split_npy(bytes)?;
    if descr != "|u1" && descr != "<u1" && descr != ">u1" {
        return Err(format!("dtype '{descr}', expected uint8 ('|u1')"));
    }
    match shape[..] {
        [n] if n == payload.len() => Ok(payload.to_vec()),
        _ => Err(format!(
            "shape {shape:?} with {} bytes of data, expected one dimension",
            payload.len()
        )),
    }
}

/// (descr, fortran_order, shape, data bytes) of a `.npy` file.
type NpyParts<'a> = (String, bool, Vec<usize>, &'a [u8]);

fn split_npy(bytes: &[u8]) -> std::result::Result<NpyParts<'_>, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy array (bad magic)".into());
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy format version {v}.{}", bytes[7])),
    };
    let data_start = header_start + header_len;
    let header = bytes
        .get(header_start..data_start)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or non-text .npy header")?;
    let (descr, fortran, shape) = parse_header(header)?;
    Ok((descr, fortran, shape, &bytes[data_start..]))
}

/// Fortran order is C order of the reversed shape; transposing that back gives C order.
fn to_c_order(shape: &[usize], data: &[f64]) -> Vec<f64> {
    let reversed: Vec<i64> = shape.iter().rev().map(|&s| s as i64).collect();
    let axes: Vec<i64> = (0..shape.len() as i64).rev().collect();
    let t = Tensor::from_slice(data)
        .reshape(reversed)
        .permute(axes)
        .contiguous()
        .reshape([-1]);
    Vec::<f64>::try_from(&t).expect("float64 tensor to Vec<f64>")
}

fn tensor_values(t: &Tensor) -> Result<Vec<f64>> {
    let flat = t
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Double)?
        .f_contiguous()?
        .f_reshape([-1])?;
    Ok(Vec::<f64>::try_from(&flat)?)
}

/// Writes `mu` and `sigma` as pytorch-fid reads them (`np.load(path)['mu']`, `['sigma']`). The
/// file appears whole or not at all: it is written beside the target and renamed over it.
pub fn save_fid_stats(path: &Path, stats: &FidStats) -> Result<()> {
    save_fid_stats_with_provenance(path, stats, None)
}

/// [`save_fid_stats`], plus the `provenance` array holding `provenance` (JSON text) when given.
pub fn save_fid_stats_with_provenance(
    path: &Path,
    stats: &FidStats,
    provenance: Option<&str>,
) -> Result<()> {
    let d = stats.mu.size();
    if d.len() != 1 || stats.sigma.size() != [d[0], d[0]] {
        return Err(data_error(
            path,
            format!(
                "FID stats to save must be mu [d] and sigma [d, d], got {:?} and {:?}",
                stats.mu.size(),
                stats.sigma.size()
            ),
        ));
    }
    let d = d[0] as usize;
    let mut members = vec![
        ("mu.npy", encode_npy_f64(&[d], &tensor_values(&stats.mu)?)),
        (
            "sigma.npy",
            encode_npy_f64(&[d, d], &tensor_values(&stats.sigma)?),
        ),
    ];
    if let Some(text) = provenance {
        members.push(("provenance.npy", encode_npy_u8(text.as_bytes())));
    }
    write_npz(path, &members)
}

/// Writes `members` (name with `.npy`, encoded array) as an uncompressed `.npz`, through a
/// temporary file and a rename, so a crash never leaves a torn file at `path`.
pub fn write_npz(path: &Path, members: &[(&str, Vec<u8>)]) -> Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let zip_error = |e: zip::result::ZipError| data_error(&tmp, format!("writing the zip: {e}"));
    let mut zip = ZipWriter::new(BufWriter::new(File::create(&tmp).at(&tmp)?));
    for (name, bytes) in members {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .large_file(bytes.len() as u64 >= u64::from(u32::MAX));
        zip.start_file(*name, options).map_err(zip_error)?;
        zip.write_all(bytes).at(&tmp)?;
    }
    let mut file = zip.finish().map_err(zip_error)?;
    file.flush().at(&tmp)?;
    file.get_ref().sync_all().at(&tmp)?;
    drop(file);
    std::fs::rename(&tmp, path).at(path)
}

/// The bytes of array `name`, or None when the archive has no such member.
fn member_bytes(
    archive: &mut ZipArchive<BufReader<File>>,
    path: &Path,
    name: &str,
) -> Result<Option<Vec<u8>>> {
    let member = format!("{name}.npy");
    let mut file = match archive.by_name(&member) {
        Ok(file) => file,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(data_error(path, format!("reading {member}: {e}"))),
    };
    let mut bytes = Vec::with_capacity(file.size() as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| data_error(path, format!("reading {member}: {e}")))?;
    Ok(Some(bytes))
}

fn read_member(
    archive: &mut ZipArchive<BufReader<File>>,
    path: &Path,
    name: &str,
) -> Result<NpyArray> {
    let bytes = member_bytes(archive, path, name)?.ok_or_else(|| {
        data_error(
            path,
            format!("no array '{name}' ({name}.npy); FID stats need 'mu' and 'sigma'"),
        )
    })?;
    decode_npy(&bytes).map_err(|msg| data_error(path, format!("array '{name}': {msg}")))
}

fn open_npz(path: &Path) -> Result<ZipArchive<BufReader<File>>> {
    let file = File::open(path).at(path)?;
    ZipArchive::new(BufReader::new(file))
        .map_err(|e| data_error(path, format!("not an .npz (zip) archive: {e}")))
}

/// The provenance JSON text sagan stored in an `.npz`, or None for a file without one (written
/// by pytorch-fid, torch-fidelity or an older sagan).
pub fn load_provenance(path: &Path) -> Result<Option<String>> {
    let mut archive = open_npz(path)?;
    let Some(bytes) = member_bytes(&mut archive, path, PROVENANCE)? else {
        return Ok(None);
    };
    let raw = decode_npy_u8(&bytes)
        .map_err(|msg| data_error(path, format!("array '{PROVENANCE}': {msg}")))?;
    String::from_utf8(raw)
        .map(Some)
        .map_err(|e| data_error(path, format!("array '{PROVENANCE}' is not UTF-8 text: {e}")))
}

/// Reads pytorch-fid statistics (`np.savez` or `np.savez_compressed` output) as float64 CPU
/// tensors, checking that `mu` is `[d]` and `sigma` is `[d, d]`.
pub fn load_fid_stats(path: &Path) -> Result<FidStats> {
    let mut archive = open_npz(path)?;
    let mu = read_member(&mut archive, path, "mu")?;
    let sigma = read_member(&mut archive, path, "sigma")?;
    let [d] = mu.shape[..] else {
        return Err(data_error(
            path,
            format!("array 'mu' has shape {:?}, expected [d]", mu.shape),
        ));
    };
    if sigma.shape != [d, d] {
        return Err(data_error(
            path,
            format!(
                "array 'sigma' has shape {:?}, expected [{d}, {d}] to match 'mu'",
                sigma.shape
            ),
        ));
    }
    let d = d as i64;
    Ok(FidStats {
        mu: Tensor::from_slice(&mu.data),
        sigma: Tensor::from_slice(&sigma.data).reshape([d, d]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_alignment() {
        let data: Vec<f64> = (0..12).map(|i| i as f64 * 0.5 - 1.0).collect();
        let bytes = encode_npy_f64(&[3, 4], &data);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % ALIGN, 0);
        assert_eq!(bytes[10 + header_len - 1], b'\n');
        let back = decode_npy(&bytes).unwrap();
        assert_eq!(back.shape, vec![3, 4]);
        assert_eq!(back.data, data);
        let one = decode_npy(&encode_npy_f64(&[5], &data[..5])).unwrap();
        assert_eq!(one.shape, vec![5]);
    }

    #[test]
    fn fortran_order_and_float32_are_converted() {
        // [[1, 2, 3], [4, 5, 6]] stored column-major as float32.
        let header = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }\n";
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for v in [1f32, 4., 2., 5., 3., 6.] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let a = decode_npy(&bytes).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![1., 2., 3., 4., 5., 6.]);
    }

    #[test]
    fn uint8_round_trip() {
        let text = "{\"a\": 1}".as_bytes();
        let bytes = encode_npy_u8(text);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % ALIGN, 0);
        assert_eq!(decode_npy_u8(&bytes).unwrap(), text);
        assert!(decode_npy(&bytes).unwrap_err().contains("'|u1'"));
        let floats = encode_npy_f64(&[2], &[1.0, 2.0]);
        assert!(decode_npy_u8(&floats).unwrap_err().contains("'<f8'"));
    }

    #[test]
    fn wrong_dtype_is_named() {
        let mut bytes = encode_npy_f64(&[2], &[1.0, 2.0]);
        let at = bytes.windows(3).position(|w| w == b"<f8").unwrap();
        bytes[at..at + 3].copy_from_slice(b"<i8");
        let err = decode_npy(&bytes).unwrap_err();
        assert!(err.contains("'<i8'") && err.contains("float64"), "{err}");
    }
}
