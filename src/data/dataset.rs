//! In-memory labelled image datasets (uint8 NCHW) and the batches cut from them.
use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::{cifar, idx};
use crate::config::{DataConfig, DatasetKind, ModelConfig};
use crate::error::{Error, Result};

pub struct Dataset {
    /// (N, C, H, W) uint8.
    pub images: Tensor,
    /// (N,) int64 class labels.
    pub labels: Tensor,
    pub num_classes: i64,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads the training split named by `data` and checks it fits `model`.
    pub fn load(data: &DataConfig, model: &ModelConfig) -> Result<Self> {
        let ds = match data.dataset {
            DatasetKind::FashionMnist => fashion_mnist(&data.path, "train", model.resolution)?,
            DatasetKind::Cifar10 => cifar::load_train(&data.path)?,
        };
        let size = ds.images.size();
        let bad = |msg: String| Error::Data {
            path: data.path.clone(),
            msg,
        };
        if size[1] != model.img_channels {
            return Err(bad(format!(
                "images have {} channels but `model.img_channels` = {}",
                size[1], model.img_channels
            )));
        }
        if size[2] != model.resolution || size[3] != model.resolution {
            return Err(bad(format!(
                "images are {}x{} but `model.resolution` = {}",
                size[2], size[3], model.resolution
            )));
        }
        if ds.num_classes > model.num_classes {
            return Err(bad(format!(
                "{} classes but `model.num_classes` = {}",
                ds.num_classes, model.num_classes
            )));
        }
        Ok(ds)
    }

    /// Images scaled to [-1, 1] (float) and labels for the given indices, on `device`.
    pub fn batch(&self, indices: &[i64], device: Device) -> (Tensor, Tensor) {
        let idx = Tensor::from_slice(indices);
        let x = to_signed_unit(&self.images.index_select(0, &idx).to_device(device));
        (x, self.labels.index_select(0, &idx).to_device(device))
    }
}

/// uint8 pixels to float in [-1, 1], the range G's tanh produces.
pub fn to_signed_unit(pixels: &Tensor) -> Tensor {
    pixels.to_kind(Kind::Float) / 127.5 - 1.0
}

/// Fashion-MNIST from the IDX files (Debian's dataset-fashion-mnist installs them gzipped under
/// /usr/share/datasets/fashion-mnist). Kept grayscale (1 channel): the architecture takes the
/// channel count from the config, and replicating to RGB would triple D's first-layer cost for
/// no information. 28x28 is zero-padded (background) to the target resolution, which keeps every
/// pixel unresampled.
pub fn fashion_mnist(dir: &Path, split: &str, resolution: i64) -> Result<Dataset> {
    let prefix = if split == "train" { "train" } else { "t10k" };
    let find = |stem: &str| -> Result<std::path::PathBuf> {
        for name in [format!("{prefix}-{stem}.gz"), format!("{prefix}-{stem}")] {
            let p = dir.join(&name);
            if p.exists() {
                return Ok(p);
            }
        }
        Err(Error::Data {
            path: dir.to_path_buf(),
            msg: format!(
                "no {prefix}-{stem}(.gz) here; install Debian's dataset-fashion-mnist (scripts/setup.sh does) or set data.path"
            ),
        })
    };
    let img_path = find("images-idx3-ubyte")?;
    let lbl_path = find("labels-idx1-ubyte")?;
    let images = idx::read_idx(&img_path)?;
    let labels = idx::read_idx(&lbl_path)?;
    if images.dims.len() != 3 || labels.dims.len() != 1 || images.dims[0] != labels.dims[0] {
        return Err(Error::Data {
            path: img_path,
            msg: format!(
                "image dims {:?} do not match label dims {:?}",
                images.dims, labels.dims
            ),
        });
    }
    let (n, h, w) = (
        images.dims[0] as i64,
        images.dims[1] as i64,
        images.dims[2] as i64,
    );
    if resolution < h || resolution < w {
        return Err(Error::Data {
            path: img_path,
            msg: format!("{h}x{w} images cannot be padded to resolution {resolution}"),
        });
    }
    let x = Tensor::from_slice(&images.data).view([n, 1, h, w]);
    let (top, left) = ((resolution - h) / 2, (resolution - w) / 2);
    let x = x.constant_pad_nd([left, resolution - w - left, top, resolution - h - top]);
    let y = Tensor::from_slice(&labels.data).to_kind(Kind::Int64);
    let num_classes = y.max().int64_value(&[]) + 1;
    Ok(Dataset {
        images: x,
        labels: y,
        num_classes,
    })
}
