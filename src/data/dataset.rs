//! Labelled image datasets (uint8 NCHW at the model's resolution), in memory or in a packed file,
//! and the batches cut from them.
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::native::{self, Native};
use super::packed::{hex, PackedFile};
use crate::config::{DataConfig, DatasetKind, ModelConfig};
use crate::distributed::Comm;
use crate::error::{Error, Result};

/// Where the pixels are: small datasets are held in memory; packed files are read on demand, so
/// memory does not grow with the dataset.
#[derive(Clone)]
enum Images {
    Memory(Arc<Vec<u8>>),
    Packed(Arc<PackedFile>),
}

/// A dataset; clones share the pixels (the loader's threads each hold one).
#[derive(Clone)]
pub struct Dataset {
    images: Images,
    labels: Arc<Vec<i64>>,
    channels: i64,
    resolution: i64,
    pub num_classes: i64,
    pub class_names: Vec<String>,
    /// What the pixels are (source and preprocessing), for messages.
    pub description: String,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn channels(&self) -> i64 {
        self.channels
    }

    pub fn resolution(&self) -> i64 {
        self.resolution
    }

    /// Bytes of one CHW image.
    pub fn image_bytes(&self) -> usize {
        (self.channels * self.resolution * self.resolution) as usize
    }

    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// Whether the pixels are read from a packed file (else they are in memory).
    pub fn is_packed(&self) -> bool {
        matches!(self.images, Images::Packed(_))
    }

    /// From native images brought to `res` (see [`native::fit_resolution`]).
    pub fn from_native(native: &Native, res: i64, threads: usize) -> Self {
        let (pixels, how) = native::fit_resolution(native, res as u32, threads);
        Self {
            images: Images::Memory(Arc::new(pixels)),
            labels: Arc::new(native.labels.iter().map(|&l| l as i64).collect()),
            channels: native.channels as i64,
            resolution: res,
            num_classes: native.class_names.len() as i64,
            class_names: native.class_names.clone(),
            description: format!("{}; {how}", native.description),
        }
    }

    pub fn from_packed(file: PackedFile) -> Self {
        let h = &file.header;
        Self {
            labels: Arc::new(file.labels().iter().map(|&l| l as i64).collect()),
            channels: h.channels as i64,
            resolution: h.resolution as i64,
            num_classes: h.class_names.len() as i64,
            class_names: h.class_names.clone(),
            description: format!("packed {} ({})", file.path.display(), h.source),
            images: Images::Packed(Arc::new(file)),
        }
    }

    /// Loads the training split named by `data` and checks it fits `model`. An ImageFolder is
    /// packed into `data.cache_dir` on first use (rank 0 packs, the others wait). Collective.
    pub fn load(data: &DataConfig, model: &ModelConfig, comm: &dyn Comm) -> Result<Self> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ds = match data.dataset {
            DatasetKind::FashionMnist => Self::from_native(
                &native::idx_pair(&data.path, "train")?,
                model.resolution,
                threads,
            ),
            DatasetKind::Cifar10 => Self::from_native(
                &super::cifar::cifar10_train(&data.path)?,
                model.resolution,
                threads,
            ),
            DatasetKind::Cifar100 => Self::from_native(
                &super::cifar::cifar100_train(&data.path)?,
                model.resolution,
                threads,
            ),
            DatasetKind::Packed => {
                Self::from_packed(PackedFile::open(&data.path, data.verify, threads)?)
            }
            DatasetKind::ImageFolder => {
                let file = super::cache::packed_folder(data, model, comm)?;
                Self::from_packed(PackedFile::open(&file, data.verify, threads)?)
            }
        };
        ds.check_fits(&data.path, model)?;
        if data.max_images > 0 {
            return ds.first(data.max_images as usize);
        }
        Ok(ds)
    }

    fn check_fits(&self, path: &Path, model: &ModelConfig) -> Result<()> {
        let bad = |msg: String| Error::Data {
            path: path.to_path_buf(),
            msg,
        };
        if self.is_empty() {
            return Err(bad("the dataset has no images".into()));
        }
        if self.channels != model.img_channels {
            return Err(bad(format!(
                "images have {} channel(s) but `model.img_channels` = {}",
                self.channels, model.img_channels
            )));
        }
        if self.resolution != model.resolution {
            return Err(bad(format!(
                "images are {r}x{r} but `model.resolution` = {}: pack the data at that resolution (sagan prepare --resolution {})",
                model.resolution,
                model.resolution,
                r = self.resolution,
            )));
        }
        if self.num_classes > model.num_classes {
            return Err(bad(format!(
                "{} classes but `model.num_classes` = {}",
                self.num_classes, model.num_classes
            )));
        }
        Ok(())
    }

    /// The first `n` images as an in-memory dataset (same classes).
    pub fn first(&self, n: usize) -> Result<Dataset> {
        let n = n.min(self.len());
        let mut pixels = vec![0u8; n * self.image_bytes()];
        for (i, slot) in pixels.chunks_exact_mut(self.image_bytes()).enumerate() {
            self.read_image(i, slot)?;
        }
        Ok(Self {
            images: Images::Memory(Arc::new(pixels)),
            labels: Arc::new(self.labels[..n].to_vec()),
            description: format!("the first {n} images of {}", self.description),
            ..self.clone()
        })
    }

    /// Copies image `i` (CHW) into `out`.
    pub fn read_image(&self, i: usize, out: &mut [u8]) -> Result<()> {
        match &self.images {
            Images::Memory(px) => {
                let b = self.image_bytes();
                out.copy_from_slice(&px[i * b..(i + 1) * b]);
                Ok(())
            }
            Images::Packed(f) => f.read_image(i, out),
        }
    }

    /// Images `start..start + n` as a uint8 `[n, C, H, W]` CPU tensor.
    pub fn images(&self, start: usize, n: usize) -> Result<Tensor> {
        let b = self.image_bytes();
        let shape = [n as i64, self.channels, self.resolution, self.resolution];
        let bytes = match &self.images {
            Images::Memory(px) => Tensor::from_slice(&px[start * b..(start + n) * b]),
            Images::Packed(f) => {
                let mut buf = vec![0u8; n * b];
                f.read_images(start, &mut buf)?;
                Tensor::from_slice(&buf)
            }
        };
        Ok(bytes.view(shape))
    }

    /// SHA-256 of all image bytes in order (NCHW), which FID provenance records. A packed file
    /// carries it in its header (checked with the file), so ImageNet is not re-hashed per run.
    pub fn images_sha256(&self) -> Result<String> {
        match &self.images {
            Images::Memory(px) => Ok(hex(&Sha256::digest(px.as_slice()))),
            Images::Packed(f) => Ok(f.header.images_sha256.clone()),
        }
    }

    /// The images at `indices` as a uint8 `[n, C, H, W]` CPU tensor.
    pub fn images_at(&self, indices: &[i64]) -> Result<Tensor> {
        let b = self.image_bytes();
        let mut buf = vec![0u8; indices.len() * b];
        for (&i, slot) in indices.iter().zip(buf.chunks_exact_mut(b)) {
            self.read_image(i as usize, slot)?;
        }
        let shape = [
            indices.len() as i64,
            self.channels,
            self.resolution,
            self.resolution,
        ];
        Ok(Tensor::from_slice(&buf).view(shape))
    }

    /// Images scaled to [-1, 1] (float) and labels for the given indices, on `device`; no flips.
    pub fn batch(&self, indices: &[i64], device: Device) -> Result<(Tensor, Tensor)> {
        let x = to_signed_unit(&self.images_at(indices)?.to_device(device));
        let y: Vec<i64> = indices.iter().map(|&i| self.labels[i as usize]).collect();
        Ok((x, Tensor::from_slice(&y).to_device(device)))
    }
}

/// uint8 pixels to float in [-1, 1], the range G's tanh produces.
pub fn to_signed_unit(pixels: &Tensor) -> Tensor {
    pixels.to_kind(Kind::Float) / 127.5 - 1.0
}

/// Fashion-MNIST's `split` from the IDX files in `dir` at `resolution` (28x28 zero-padded to 32,
/// resized otherwise; see [`native::pads`]). Kept grayscale (1 channel): the architecture takes
/// the channel count from the config, and replicating to RGB would triple D's first-layer cost
/// for no information.
pub fn fashion_mnist(dir: &Path, split: &str, resolution: i64) -> Result<Dataset> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Dataset::from_native(
        &native::idx_pair(dir, split)?,
        resolution,
        threads,
    ))
}
