//! safetensors files: written with metadata and a SHA-256 of every byte, read back with every name
//! and shape checked against the network they are loaded into. Loading parses JSON and copies
//! bytes; it never executes code.
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use tch::{Kind, Tensor};

use crate::error::{Error, IoContext, Result};

/// What a written file is, for the state file's checksum list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileDigest {
    pub bytes: u64,
    pub sha256: String,
}

fn dtype_name(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::Float => "F32",
        Kind::Double => "F64",
        Kind::Half => "F16",
        Kind::BFloat16 => "BF16",
        Kind::Int64 => "I64",
        Kind::Int => "I32",
        Kind::Uint8 => "U8",
        Kind::Bool => "BOOL",
        _ => return None,
    })
}

fn kind_of(dtype: safetensors::Dtype) -> Option<Kind> {
    use safetensors::Dtype as D;
    Some(match dtype {
        D::F32 => Kind::Float,
        D::F64 => Kind::Double,
        D::F16 => Kind::Half,
        D::BF16 => Kind::BFloat16,
        D::I64 => Kind::Int64,
        D::I32 => Kind::Int,
        D::U8 => Kind::Uint8,
        D::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// Hashes everything written through it.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `tensors` (CPU, contiguous, in this order) with `metadata` to `path` and syncs it to
/// disk. Returns its size and SHA-256.
pub fn write(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<FileDigest> {
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0usize;
    for (name, t) in tensors {
        let dtype = dtype_name(t.kind())
            .ok_or_else(|| bad(format!("tensor {name}: dtype {:?} unsupported", t.kind())))?;
        let len = t.numel() * t.kind().elt_size_in_bytes();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": t.size(), "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut head = serde_json::to_vec(&header).expect("JSON header");
    // safetensors aligns the data to 8 bytes by padding the header with spaces.
    head.resize(head.len().next_multiple_of(8), b' ');
    let file = File::create(path).at(path)?;
    let mut out = HashingWriter {
        inner: BufWriter::with_capacity(1 << 22, file),
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut body = || -> std::io::Result<()> {
        out.write_all(&(head.len() as u64).to_le_bytes())?;
        out.write_all(&head)?;
        let mut buf = Vec::new();
        for (_, t) in tensors {
            let len = t.numel() * t.kind().elt_size_in_bytes();
            buf.resize(len, 0);
            t.copy_data_u8(&mut buf, t.numel());
            out.write_all(&buf)?;
        }
        out.flush()
    };
    body().at(path)?;
    let HashingWriter {
        inner, hash, bytes, ..
    } = out;
    let file = inner.into_inner().map_err(|e| e.into_error()).at(path)?;
    file.sync_all().at(path)?;
    Ok(FileDigest {
        bytes,
        sha256: hex(&hash.finalize()),
    })
}

/// A file's tensors (on the CPU, in file order) and metadata.
pub struct Loaded {
    pub tensors: Vec<(String, Tensor)>,
    pub metadata: HashMap<String, String>,
}

/// Reads a safetensors file; with `expected`, first checks its size and SHA-256 against it.
pub fn read(path: &Path, expected: Option<&FileDigest>) -> Result<Loaded> {
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let bytes = std::fs::read(path).at(path)?;
    if let Some(want) = expected {
        if bytes.len() as u64 != want.bytes {
            return Err(bad(format!(
                "{} bytes, but {} were written (truncated or overwritten)",
                bytes.len(),
                want.bytes
            )));
        }
        let got = hex(&Sha256::digest(&bytes));
        if got != want.sha256 {
            return Err(bad(format!(
                "SHA-256 {got} differs from the {} recorded when it was written (corrupted)",
                want.sha256
            )));
        }
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a readable safetensors file: {e:?}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a readable safetensors file: {e:?}")))?;
    let mut tensors = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            bad(format!(
                "tensor {name}: dtype {:?} unsupported",
                view.dtype()
            ))
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind).map_err(|e| {
            bad(format!(
                "tensor {name}: {}",
                crate::error::torch_message(&e)
            ))
        })?;
        tensors.push((name, t));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Loaded {
        tensors,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

/// Copies `source` into `targets` (a network's variables, by name). Every target must be present
/// with its shape and dtype, and nothing else may be: the error names the tensor and both shapes,
/// so loading another architecture says what differs instead of failing deep inside libtorch.
pub fn copy_into(
    path: &Path,
    what: &str,
    targets: &[(String, Tensor)],
    source: &[(String, Tensor)],
) -> Result<()> {
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let by_name: HashMap<&str, &Tensor> = source.iter().map(|(n, t)| (n.as_str(), t)).collect();
    for (name, dst) in targets {
        let src = by_name.get(name.as_str()).ok_or_else(|| {
            bad(format!(
                "{what} tensor {name} (shape {:?}) is missing: the file holds another network \
                 (compare the model section of its config with this one)",
                dst.size()
            ))
        })?;
        if src.size() != dst.size() || src.kind() != dst.kind() {
            return Err(bad(format!(
                "{what} tensor {name} has shape {:?} ({:?}) in the file but {:?} ({:?}) in this \
                 config's model: the file was written for another architecture or width",
                src.size(),
                src.kind(),
                dst.size(),
                dst.kind()
            )));
        }
    }
    let wanted: std::collections::HashSet<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
    if let Some((extra, t)) = source.iter().find(|(n, _)| !wanted.contains(n.as_str())) {
        return Err(bad(format!(
            "the file has a tensor {extra} (shape {:?}) that this config's {what} does not: it \
             was written for another architecture",
            t.size()
        )));
    }
    tch::no_grad(|| {
        for (name, dst) in targets {
            let src = by_name[name.as_str()];
            dst.shallow_clone()
                .f_copy_(&src.to_device(dst.device()))
                .map_err(|e| {
                    bad(format!(
                        "{what} tensor {name}: {}",
                        crate::error::torch_message(&e)
                    ))
                })?;
        }
        Ok(())
    })
}

/// A detached, contiguous CPU copy that later training steps cannot change.
pub fn snapshot(t: &Tensor) -> Tensor {
    let t = t.detach();
    if t.device() == tch::Device::Cpu {
        t.copy().contiguous()
    } else {
        t.to_device(tch::Device::Cpu).contiguous()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let a = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).view([3, 4]);
        let b = Tensor::from_slice(&[1i64, -2, 3]);
        let meta = BTreeMap::from([("step".to_string(), "7".to_string())]);
        let digest = write(
            &p,
            &[
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            &meta,
        )
        .unwrap();
        assert_eq!(digest.bytes, std::fs::metadata(&p).unwrap().len());
        let back = read(&p, Some(&digest)).unwrap();
        assert_eq!(back.metadata["step"], "7");
        assert!(back.tensors[0].1.equal(&a) && back.tensors[1].1.equal(&b));
        // tch's own reader agrees with our writer.
        let theirs = Tensor::read_safetensors(&p).unwrap();
        assert_eq!(theirs.len(), 2);

        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let e = read(&p, Some(&digest)).err().unwrap().to_string();
        assert!(e.contains("SHA-256") && e.contains("corrupted"), "{e}");
        std::fs::write(&p, &bytes[..100]).unwrap();
        let e = read(&p, Some(&digest)).err().unwrap().to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = read(&p, None).err().unwrap().to_string();
        assert!(e.contains("not a readable safetensors file"), "{e}");
    }

    /// Restoring writes into the live tensors where they are (their device, their memory),
    /// never replaces them: parameters and Adam moments are views into flat tensors, which must
    /// see the restored values. The snapshot that was saved is a CPU copy the live tensors no
    /// longer change.
    #[test]
    fn snapshot_copies_to_the_host_and_copy_into_writes_through_views_in_place() {
        let flat = Tensor::arange(10, (Kind::Float, tch::Device::Cpu));
        let view = flat.narrow(0, 2, 6).view([2, 3]);
        let saved = snapshot(&view);
        assert_eq!(saved.device(), tch::Device::Cpu);
        assert!(saved.is_contiguous());
        assert_ne!(saved.data_ptr(), view.data_ptr());
        let _ = flat.shallow_clone().fill_(-1.0);
        let expected = Tensor::arange_start(2, 8, (Kind::Float, tch::Device::Cpu)).view([2, 3]);
        assert!(
            saved.equal(&expected),
            "the snapshot changed with the live tensor"
        );

        let (ptr, device) = (view.data_ptr(), view.device());
        let targets = vec![("w".to_string(), view.shallow_clone())];
        copy_into(Path::new("x"), "G", &targets, &[("w".into(), saved)]).unwrap();
        assert_eq!((view.data_ptr(), view.device()), (ptr, device));
        assert!(flat.narrow(0, 2, 6).view([2, 3]).equal(&expected));
        assert_eq!(flat.double_value(&[0]), -1.0);
    }

    #[test]
    fn copy_into_names_the_tensor_and_both_shapes() {
        let dst = vec![(
            "w".to_string(),
            Tensor::zeros([4, 2], (Kind::Float, tch::Device::Cpu)),
        )];
        let src = vec![(
            "w".to_string(),
            Tensor::ones([8, 2], (Kind::Float, tch::Device::Cpu)),
        )];
        let e = copy_into(Path::new("x"), "G", &dst, &src)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("G tensor w") && e.contains("[8, 2]") && e.contains("[4, 2]"),
            "{e}"
        );
        let ok = vec![(
            "w".to_string(),
            Tensor::ones([4, 2], (Kind::Float, tch::Device::Cpu)),
        )];
        copy_into(Path::new("x"), "G", &dst, &ok).unwrap();
        assert_eq!(dst[0].1.sum(Kind::Float).double_value(&[]), 8.0);
        let e = copy_into(Path::new("x"), "G", &dst, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }
}
