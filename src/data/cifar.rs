//! CIFAR-10 in its binary distribution (data_batch_{1..5}.bin: records of 1 label byte + 3072
//! bytes of CHW pixels).
use std::path::Path;

use tch::{Kind, Tensor};

use super::dataset::Dataset;
use crate::error::{Error, IoContext, Result};

const RECORD: usize = 1 + 3 * 32 * 32;

pub fn load_train(dir: &Path) -> Result<Dataset> {
    let files: Vec<_> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect();
    load_files(&files)
}

pub fn load_files(files: &[std::path::PathBuf]) -> Result<Dataset> {
    let mut labels = Vec::new();
    let mut pixels = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).at(f)?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(Error::Data {
                path: f.clone(),
                msg: format!(
                    "size {} is not a multiple of the {RECORD}-byte CIFAR-10 record",
                    bytes.len()
                ),
            });
        }
        for rec in bytes.chunks_exact(RECORD) {
            if rec[0] > 9 {
                return Err(Error::Data {
                    path: f.clone(),
                    msg: format!("label {} out of range 0..=9", rec[0]),
                });
            }
            labels.push(rec[0] as i64);
            pixels.extend_from_slice(&rec[1..]);
        }
    }
    let n = labels.len() as i64;
    Ok(Dataset {
        images: Tensor::from_slice(&pixels).view([n, 3, 32, 32]),
        labels: Tensor::from_slice(&labels).to_kind(Kind::Int64),
        num_classes: 10,
    })
}
