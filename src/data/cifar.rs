//! CIFAR-10 and CIFAR-100 in their binary distributions. CIFAR-10: data_batch_{1..5}.bin, records
//! of 1 label byte + 3072 bytes of CHW pixels. CIFAR-100: train.bin, records of a coarse and a
//! fine label byte + 3072 bytes; the fine label (100 classes) is used.
use std::path::{Path, PathBuf};

use super::native::Native;
use crate::error::{Error, IoContext, Result};

const PIXELS: usize = 3 * 32 * 32;

pub fn cifar10_train(dir: &Path) -> Result<Native> {
    let files: Vec<_> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect();
    load_files(&files)
}

pub fn cifar100_train(dir: &Path) -> Result<Native> {
    load_files(&[dir.join("train.bin")])
}

/// Reads CIFAR binaries; the record size says which CIFAR it is (all files must agree).
pub fn load_files(files: &[PathBuf]) -> Result<Native> {
    let mut labels = Vec::new();
    let mut images = Vec::new();
    let mut label_bytes = 0;
    for f in files {
        let bytes = std::fs::read(f).at(f)?;
        let err = |msg: String| Error::Data {
            path: f.clone(),
            msg,
        };
        // CIFAR-100 names its files train.bin/test.bin; a size that is a multiple of both record
        // lengths is impossible for real files (3073 and 3074 are coprime beyond tiny counts).
        let lb = if bytes.len() % (1 + PIXELS) == 0 && !is_cifar100_name(f) {
            1
        } else if bytes.len() % (2 + PIXELS) == 0 {
            2
        } else {
            return Err(err(format!(
                "size {} is not a multiple of the {}-byte CIFAR-10 record or the {}-byte CIFAR-100 record",
                bytes.len(),
                1 + PIXELS,
                2 + PIXELS
            )));
        };
        if bytes.is_empty() {
            return Err(err("empty file".into()));
        }
        if label_bytes != 0 && lb != label_bytes {
            return Err(err("mixes CIFAR-10 and CIFAR-100 files".into()));
        }
        label_bytes = lb;
        let max = if lb == 1 { 9 } else { 99 };
        for rec in bytes.chunks_exact(lb + PIXELS) {
            let label = rec[lb - 1];
            if label > max {
                return Err(err(format!("label {label} out of range 0..={max}")));
            }
            labels.push(label as u32);
            images.extend_from_slice(&rec[lb..]);
        }
    }
    let dir = files
        .first()
        .and_then(|f| f.parent())
        .unwrap_or(Path::new("."));
    let class_names = if label_bytes == 1 {
        read_names(&dir.join("batches.meta.txt"), 10).unwrap_or_else(|| {
            super::class_names::CIFAR10
                .iter()
                .map(|s| s.to_string())
                .collect()
        })
    } else {
        read_names(&dir.join("fine_label_names.txt"), 100)
            .unwrap_or_else(|| (0..100).map(|i| i.to_string()).collect())
    };
    Ok(Native {
        images,
        channels: 3,
        height: 32,
        width: 32,
        labels,
        class_names,
        description: format!(
            "CIFAR-{} binary {}",
            if label_bytes == 1 { 10 } else { 100 },
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

fn is_cifar100_name(f: &Path) -> bool {
    matches!(
        f.file_name().and_then(|n| n.to_str()),
        Some("train.bin" | "test.bin")
    )
}

/// The distribution's class-name file (one name per line), if it is there and has `n` names.
fn read_names(path: &Path, n: usize) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (names.len() == n).then_some(names)
}
