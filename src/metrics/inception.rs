//! pytorch-fid's Inception-v3: the network behind published FID numbers (and, through its logits,
//! the Inception Score).
//!
//! This is torchvision's Inception-v3 as pytorch-fid patches it to reproduce the TensorFlow graph
//! the FID was defined on: the `Mixed_5*`, `Mixed_6b..e` and `Mixed_7b` blocks average-pool without
//! counting the zero padding, `Mixed_7c` max-pools instead, and the classifier has 1008 classes.
//! Preprocessing is pytorch-fid's `InceptionV3(resize_input=True, normalize_input=True)`: images
//! in [0, 1] are resized bilinearly to 299x299 (`align_corners=False`, no antialiasing) and mapped
//! to [-1, 1]. The features are the 2048-d pool3 output; the logits are pool3 times the fc weight
//! without the bias, which is what torch-fidelity's Inception Score uses.
//!
//! The Inception Score follows torch-fidelity instead, input path included
//! ([`InceptionV3::is_logits`]): uint8 pixels, resized to 299x299 as TensorFlow 1 did (bilinear
//! without half-pixel centres) and mapped by (x - 128) / 128. The two resizes differ visibly when
//! upsampling 32x32 images, so mixing them would make our IS incomparable with torch-fidelity's
//! (and our FID with pytorch-fid's).
//!
//! # Weights
//!
//! The weights are pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (downloaded by pytorch-fid
//! into `~/.cache/torch/hub/checkpoints/`, or from
//! <https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth>),
//! converted once to safetensors with the tensor names unchanged:
//!
//! ```text
//! python -c "import sys, torch, safetensors.torch as st; st.save_file({k: v.contiguous() for k, v in torch.load(sys.argv[1], map_location='cpu').items()}, sys.argv[2])" pt_inception-2015-12-05-6726825d.pth pt_inception-2015-12-05.safetensors
//! ```
//!
//! `scripts/convert_inception.py IN OUT` does the same and checks the result.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Width of the pool3 features, the FID feature space.
pub const FEATURES: i64 = 2048;
/// The TF graph's classifier has 1008 outputs (1000 ImageNet classes plus unused slots).
pub const CLASSES: i64 = 1008;
/// pytorch-fid resizes every input to this, whatever its size.
const INPUT_SIZE: i64 = 299;
/// torchvision's `BasicConv2d` uses TensorFlow's batch-norm epsilon, not PyTorch's default 1e-5.
const BN_EPS: f64 = 1e-3;

/// Conv (no bias) + batch norm (eval) + ReLU: torchvision's `BasicConv2d`.
struct ConvBn {
    weight: Tensor,
    gamma: Tensor,
    beta: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    stride: [i64; 2],
    padding: [i64; 2],
}

impl ConvBn {
    fn forward(&self, x: &Tensor) -> Tensor {
        // The same two ATen ops as PyTorch's modules, rather than BN folded into the conv weights,
        // so the result rounds the way pytorch-fid's does.
        x.conv2d::<&Tensor>(&self.weight, None, self.stride, self.padding, [1, 1], 1)
            .batch_norm(
                Some(&self.gamma),
                Some(&self.beta),
                Some(&self.running_mean),
                Some(&self.running_var),
                false,
                0.0,
                BN_EPS,
                true,
            )
            .relu()
    }
}

/// TensorFlow's 3x3 stride-1 average pool divides by the number of real pixels under the window,
/// which is what pytorch-fid's patch reproduces with `count_include_pad=False`.
fn avg_pool_3x3_tf(x: &Tensor) -> Tensor {
    x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None)
}

fn max_pool_3x3(x: &Tensor, stride: i64, padding: i64) -> Tensor {
    x.max_pool2d([3, 3], [stride, stride], [padding, padding], [1, 1], false)
}

/// `Mixed_5b..5d` (pytorch-fid's `FIDInceptionA`).
struct BlockA {
    branch1x1: ConvBn,
    branch5x5: [ConvBn; 2],
    branch3x3dbl: [ConvBn; 3],
    branch_pool: ConvBn,
}

impl BlockA {
    fn load(w: &mut Weights, name: &str, cin: i64, pool_features: i64) -> Result<Self> {
        let p = |s: &str| format!("{name}.{s}");
        Ok(Self {
            branch1x1: w.conv(&p("branch1x1"), cin, 64, (1, 1), 1, (0, 0))?,
            branch5x5: [
                w.conv(&p("branch5x5_1"), cin, 48, (1, 1), 1, (0, 0))?,
                w.conv(&p("branch5x5_2"), 48, 64, (5, 5), 1, (2, 2))?,
            ],
            branch3x3dbl: [
                w.conv(&p("branch3x3dbl_1"), cin, 64, (1, 1), 1, (0, 0))?,
                w.conv(&p("branch3x3dbl_2"), 64, 96, (3, 3), 1, (1, 1))?,
                w.conv(&p("branch3x3dbl_3"), 96, 96, (3, 3), 1, (1, 1))?,
            ],
            branch_pool: w.conv(&p("branch_pool"), cin, pool_features, (1, 1), 1, (0, 0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        Tensor::cat(
            &[
                self.branch1x1.forward(x),
                chain(&self.branch5x5, x),
                chain(&self.branch3x3dbl, x),
                self.branch_pool.forward(&avg_pool_3x3_tf(x)),
            ],
            1,
        )
    }
}

/// `Mixed_6a` (torchvision's `InceptionB`, unpatched): the 35x35 -> 17x17 reduction.
struct BlockB {
    branch3x3: ConvBn,
    branch3x3dbl: [ConvBn; 3],
}

impl BlockB {
    fn load(w: &mut Weights, name: &str, cin: i64) -> Result<Self> {
        let p = |s: &str| format!("{name}.{s}");
        Ok(Self {
            branch3x3: w.conv(&p("branch3x3"), cin, 384, (3, 3), 2, (0, 0))?,
            branch3x3dbl: [
                w.conv(&p("branch3x3dbl_1"), cin, 64, (1, 1), 1, (0, 0))?,
                w.conv(&p("branch3x3dbl_2"), 64, 96, (3, 3), 1, (1, 1))?,
                w.conv(&p("branch3x3dbl_3"), 96, 96, (3, 3), 2, (0, 0))?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        Tensor::cat(
            &[
                self.branch3x3.forward(x),
                chain(&self.branch3x3dbl, x),
                max_pool_3x3(x, 2, 0),
            ],
            1,
        )
    }
}

/// `Mixed_6b..6e` (pytorch-fid's `FIDInceptionC`): factorised 7x7 convolutions.
struct BlockC {
    branch1x1: ConvBn,
    branch7x7: [ConvBn; 3],
    branch7x7dbl: [ConvBn; 5],
    branch_pool: ConvBn,
}

impl BlockC {
    fn load(w: &mut Weights, name: &str, cin: i64, c7: i64) -> Result<Self> {
        let p = |s: &str| format!("{name}.{s}");
        let (row, col) = ((1, 7), (7, 1));
        let (row_pad, col_pad) = ((0, 3), (3, 0));
        Ok(Self {
            branch1x1: w.conv(&p("branch1x1"), cin, 192, (1, 1), 1, (0, 0))?,
            branch7x7: [
                w.conv(&p("branch7x7_1"), cin, c7, (1, 1), 1, (0, 0))?,
                w.conv(&p("branch7x7_2"), c7, c7, row, 1, row_pad)?,
                w.conv(&p("branch7x7_3"), c7, 192, col, 1, col_pad)?,
            ],
            branch7x7dbl: [
                w.conv(&p("branch7x7dbl_1"), cin, c7, (1, 1), 1, (0, 0))?,
                w.conv(&p("branch7x7dbl_2"), c7, c7, col, 1, col_pad)?,
                w.conv(&p("branch7x7dbl_3"), c7, c7, row, 1, row_pad)?,
                w.conv(&p("branch7x7dbl_4"), c7, c7, col, 1, col_pad)?,
                w.conv(&p("branch7x7dbl_5"), c7, 192, row, 1, row_pad)?,
            ],
            branch_pool: w.conv(&p("branch_pool"), cin, 192, (1, 1), 1, (0, 0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        Tensor::cat(
            &[
                self.branch1x1.forward(x),
                chain(&self.branch7x7, x),
                chain(&self.branch7x7dbl, x),
                self.branch_pool.forward(&avg_pool_3x3_tf(x)),
            ],
            1,
        )
    }
}

/// `Mixed_7a` (torchvision's `InceptionD`, unpatched): the 17x17 -> 8x8 reduction.
struct BlockD {
    branch3x3: [ConvBn; 2],
    branch7x7x3: [ConvBn; 4],
}

impl BlockD {
    fn load(w: &mut Weights, name: &str, cin: i64) -> Result<Self> {
        let p = |s: &str| format!("{name}.{s}");
        Ok(Self {
            branch3x3: [
                w.conv(&p("branch3x3_1"), cin, 192, (1, 1), 1, (0, 0))?,
                w.conv(&p("branch3x3_2"), 192, 320, (3, 3), 2, (0, 0))?,
            ],
            branch7x7x3: [
                w.conv(&p("branch7x7x3_1"), cin, 192, (1, 1), 1, (0, 0))?,
                w.conv(&p("branch7x7x3_2"), 192, 192, (1, 7), 1, (0, 3))?,
                w.conv(&p("branch7x7x3_3"), 192, 192, (7, 1), 1, (3, 0))?,
                w.conv(&p("branch7x7x3_4"), 192, 192, (3, 3), 2, (0, 0))?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        Tensor::cat(
            &[
                chain(&self.branch3x3, x),
                chain(&self.branch7x7x3, x),
                max_pool_3x3(x, 2, 0),
            ],
            1,
        )
    }
}

#[derive(Clone, Copy)]
enum PoolBranch {
    /// `FIDInceptionE_1` (`Mixed_7b`).
    AvgTf,
    /// `FIDInceptionE_2` (`Mixed_7c`): the TF graph max-pools here, unlike the paper.
    Max,
}

/// `Mixed_7b`, `Mixed_7c`: the 8x8 blocks with split 1x3 / 3x1 outputs.
struct BlockE {
    branch1x1: ConvBn,
    branch3x3_1: ConvBn,
    branch3x3_2a: ConvBn,
    branch3x3_2b: ConvBn,
    branch3x3dbl_1: ConvBn,
    branch3x3dbl_2: ConvBn,
    branch3x3dbl_3a: ConvBn,
    branch3x3dbl_3b: ConvBn,
    branch_pool: ConvBn,
    pool: PoolBranch,
}

impl BlockE {
    fn load(w: &mut Weights, name: &str, cin: i64, pool: PoolBranch) -> Result<Self> {
        let p = |s: &str| format!("{name}.{s}");
        Ok(Self {
            branch1x1: w.conv(&p("branch1x1"), cin, 320, (1, 1), 1, (0, 0))?,
            branch3x3_1: w.conv(&p("branch3x3_1"), cin, 384, (1, 1), 1, (0, 0))?,
            branch3x3_2a: w.conv(&p("branch3x3_2a"), 384, 384, (1, 3), 1, (0, 1))?,
            branch3x3_2b: w.conv(&p("branch3x3_2b"), 384, 384, (3, 1), 1, (1, 0))?,
            branch3x3dbl_1: w.conv(&p("branch3x3dbl_1"), cin, 448, (1, 1), 1, (0, 0))?,
            branch3x3dbl_2: w.conv(&p("branch3x3dbl_2"), 448, 384, (3, 3), 1, (1, 1))?,
            branch3x3dbl_3a: w.conv(&p("branch3x3dbl_3a"), 384, 384, (1, 3), 1, (0, 1))?,
            branch3x3dbl_3b: w.conv(&p("branch3x3dbl_3b"), 384, 384, (3, 1), 1, (1, 0))?,
            branch_pool: w.conv(&p("branch_pool"), cin, 192, (1, 1), 1, (0, 0))?,
            pool,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let b3 = self.branch3x3_1.forward(x);
        let dbl = self.branch3x3dbl_2.forward(&self.branch3x3dbl_1.forward(x));
        let pooled = match self.pool {
            PoolBranch::AvgTf => avg_pool_3x3_tf(x),
            PoolBranch::Max => max_pool_3x3(x, 1, 1),
        };
        Tensor::cat(
            &[
                self.branch1x1.forward(x),
                self.branch3x3_2a.forward(&b3),
                self.branch3x3_2b.forward(&b3),
                self.branch3x3dbl_3a.forward(&dbl),
                self.branch3x3dbl_3b.forward(&dbl),
                self.branch_pool.forward(&pooled),
            ],
            1,
        )
    }
}

fn chain(layers: &[ConvBn], x: &Tensor) -> Tensor {
    let (first, rest) = layers
        .split_first()
        .expect("a branch has at least one layer");
    rest.iter()
        .fold(first.forward(x), |h, layer| layer.forward(&h))
}

/// Tensors read from the file, taken out one by one as the network claims them so leftovers can
/// be reported.
struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    device: Device,
}

impl Weights {
    fn error(&self, msg: String) -> Error {
        Error::Data {
            path: self.path.clone(),
            msg,
        }
    }

    fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let t = self.tensors.remove(name).ok_or_else(|| {
            self.error(format!(
                "Inception weights lack tensor `{name}` (expected shape {shape:?})"
            ))
        })?;
        if t.size() != shape {
            return Err(self.error(format!(
                "Inception tensor `{name}` has shape {:?}, expected {shape:?}",
                t.size()
            )));
        }
        if !t.is_floating_point() {
            return Err(self.error(format!(
                "Inception tensor `{name}` has dtype {:?}, expected a float type",
                t.kind()
            )));
        }
        Ok(t.to_device(self.device).to_kind(Kind::Float))
    }

    fn conv(
        &mut self,
        name: &str,
        cin: i64,
        cout: i64,
        kernel: (i64, i64),
        stride: i64,
        padding: (i64, i64),
    ) -> Result<ConvBn> {
        let vec = [cout];
        Ok(ConvBn {
            weight: self.take(
                &format!("{name}.conv.weight"),
                &[cout, cin, kernel.0, kernel.1],
            )?,
            gamma: self.take(&format!("{name}.bn.weight"), &vec)?,
            beta: self.take(&format!("{name}.bn.bias"), &vec)?,
            running_mean: self.take(&format!("{name}.bn.running_mean"), &vec)?,
            running_var: self.take(&format!("{name}.bn.running_var"), &vec)?,
            stride: [stride, stride],
            padding: [padding.0, padding.1],
        })
    }

    /// Extra tensors mean the file is some other network (torchvision's ImageNet Inception has
    /// `AuxLogits.*`), whose features would silently give incomparable FIDs.
    fn finish(self) -> Result<()> {
        // BN step counters: state_dict bookkeeping with no effect in eval mode.
        let mut extra: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !k.ends_with(".num_batches_tracked"))
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        extra.sort();
        let shown: Vec<&str> = extra.iter().take(5).map(|s| s.as_str()).collect();
        Err(self.error(format!(
            "{} unexpected tensor(s) in Inception weights, e.g. {}; expected pytorch-fid's \
             pt_inception-2015-12-05 state_dict",
            extra.len(),
            shown.join(", ")
        )))
    }
}

/// pytorch-fid's FID Inception-v3 in eval mode, for inference only.
pub struct InceptionV3 {
    conv1a: ConvBn,
    conv2a: ConvBn,
    conv2b: ConvBn,
    conv3b: ConvBn,
    conv4a: ConvBn,
    mixed5: [BlockA; 3],
    mixed6a: BlockB,
    mixed6: [BlockC; 4],
    mixed7a: BlockD,
    mixed7: [BlockE; 2],
    fc_weight: Tensor,
    fc_bias: Tensor,
    device: Device,
}

impl InceptionV3 {
    /// Loads a safetensors file whose names and shapes are those of pytorch-fid's state_dict
    /// (see the module docs for the conversion). Every tensor must be present with its shape, and
    /// nothing else may be (apart from `*.num_batches_tracked`).
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Data {
                path: path.to_path_buf(),
                msg: "no Inception weights here; convert pytorch-fid's \
                      pt_inception-2015-12-05-6726825d.pth with scripts/convert_inception.py"
                    .into(),
            });
        }
        let tensors = Tensor::read_safetensors(path).map_err(|e| Error::Data {
            path: path.to_path_buf(),
            msg: format!("cannot read Inception weights as safetensors: {e}"),
        })?;
        let mut w = Weights {
            path: path.to_path_buf(),
            tensors: tensors.into_iter().collect(),
            device,
        };
        let net = Self {
            conv1a: w.conv("Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0))?,
            conv2a: w.conv("Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0))?,
            conv2b: w.conv("Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1))?,
            conv3b: w.conv("Conv2d_3b_1x1", 64, 80, (1, 1), 1, (0, 0))?,
            conv4a: w.conv("Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0))?,
            mixed5: [
                BlockA::load(&mut w, "Mixed_5b", 192, 32)?,
                BlockA::load(&mut w, "Mixed_5c", 256, 64)?,
                BlockA::load(&mut w, "Mixed_5d", 288, 64)?,
            ],
            mixed6a: BlockB::load(&mut w, "Mixed_6a", 288)?,
            mixed6: [
                BlockC::load(&mut w, "Mixed_6b", 768, 128)?,
                BlockC::load(&mut w, "Mixed_6c", 768, 160)?,
                BlockC::load(&mut w, "Mixed_6d", 768, 160)?,
                BlockC::load(&mut w, "Mixed_6e", 768, 192)?,
            ],
            mixed7a: BlockD::load(&mut w, "Mixed_7a", 768)?,
            mixed7: [
                BlockE::load(&mut w, "Mixed_7b", 1280, PoolBranch::AvgTf)?,
                BlockE::load(&mut w, "Mixed_7c", 2048, PoolBranch::Max)?,
            ],
            fc_weight: w.take("fc.weight", &[CLASSES, FEATURES])?,
            fc_bias: w.take("fc.bias", &[CLASSES])?,
            device,
        };
        w.finish()?;
        Ok(net)
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// (pool3 features `[N, 2048]`, logits `[N, 1008]` = pool3 x fc.weight^T without the bias, as
    /// torch-fidelity's IS uses) of `[N, 3, H, W]` images in [0, 1], any H and W. Outputs are float
    /// on this network's device. The whole batch goes through at 299x299, so the caller sizes it.
    pub fn forward(&self, images: &Tensor) -> (Tensor, Tensor) {
        let pool3 = self.pool3(images);
        let logits = tch::no_grad(|| pool3.mm(&self.fc_weight.tr()));
        (pool3, logits)
    }

    /// torch-fidelity's `logits` feature (the unbiased logits plus the fc bias), from `forward`'s
    /// logits.
    pub fn logits_with_bias(&self, logits: &Tensor) -> Tensor {
        tch::no_grad(|| logits + self.fc_bias.unsqueeze(0))
    }

    /// The 2048-d pool3 features alone, for FID.
    pub fn pool3(&self, images: &Tensor) -> Tensor {
        check_images(images);
        tch::no_grad(|| {
            let x = images.to_device(self.device).to_kind(Kind::Float);
            // F.interpolate(size=(299, 299), mode='bilinear', align_corners=False) passes no
            // scale factors, so the source coordinates come from the size ratio alone.
            let x = x.upsample_bilinear2d([INPUT_SIZE, INPUT_SIZE], false, None, None);
            self.trunk(&(x * 2.0 - 1.0))
        })
    }

    /// torch-fidelity's `logits_unbiased` (what its Inception Score uses) of `[N, 3, H, W]` uint8
    /// images, through its input path: float32, [`resize_bilinear_tf1`] to 299x299, then
    /// (x - 128) / 128. Float `[N, 1008]` on this network's device.
    pub fn is_logits(&self, pixels: &Tensor) -> Tensor {
        check_images(pixels);
        assert_eq!(
            pixels.kind(),
            Kind::Uint8,
            "torch-fidelity's Inception input is uint8 pixels"
        );
        tch::no_grad(|| {
            let x = pixels.to_device(self.device).to_kind(Kind::Float);
            let x = resize_bilinear_tf1(&x, INPUT_SIZE, INPUT_SIZE);
            // Division by a power of two is exact, so this equals TF's (x - 128) * 0.0078125.
            let x = (x - 128.0) / 128.0;
            self.trunk(&x).mm(&self.fc_weight.tr())
        })
    }

    /// The network from the first convolution to pool3, on [-1, 1] inputs at 299x299.
    fn trunk(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let x = self
                .conv2b
                .forward(&self.conv2a.forward(&self.conv1a.forward(x)));
            let x = max_pool_3x3(&x, 2, 0);
            let x = self.conv4a.forward(&self.conv3b.forward(&x));
            let mut x = max_pool_3x3(&x, 2, 0);
            for block in &self.mixed5 {
                x = block.forward(&x);
            }
            x = self.mixed6a.forward(&x);
            for block in &self.mixed6 {
                x = block.forward(&x);
            }
            x = self.mixed7a.forward(&x);
            for block in &self.mixed7 {
                x = block.forward(&x);
            }
            x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
        })
    }
}

fn check_images(images: &Tensor) {
    let size = images.size();
    assert!(
        size.len() == 4 && size[1] == 3,
        "InceptionV3 takes [N, 3, H, W] images, got shape {size:?}"
    );
}

/// Source pixels and weights of one axis of [`resize_bilinear_tf1`]: for output index i the
/// source coordinate is `i * (in / out)` (no half-pixel centres), computed in float32 from a
/// float32 scale as torch-fidelity does; `lo` is its floor, `hi` the next pixel clamped to the
/// edge, `frac` the distance from `lo`.
fn tf1_axis(in_size: i64, out_size: i64, device: Device) -> (Tensor, Tensor, Tensor) {
    let scale = (in_size as f64 / out_size as f64) as f32;
    let coord = Tensor::arange(out_size, (Kind::Float, device))
        * Tensor::scalar_tensor(f64::from(scale), (Kind::Float, device));
    // Coordinates are non-negative, so truncation (torch's `.long()`) is the floor.
    let lo = coord.to_kind(Kind::Int64);
    let hi = (&lo + 1).clamp_max(in_size - 1);
    let frac = &coord - lo.to_kind(Kind::Float);
    (lo, hi, frac)
}

/// TensorFlow 1's `resize_bilinear(align_corners=False)` of `[N, C, H, W]` float images to
/// `out_h x out_w`, as torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x` ("slow"
/// method, the one its Inception feature extractor uses) computes it: the same gathers and the
/// same float32 interpolation steps in the same order, so the result is bit-identical to theirs on
/// CPU, not merely close. (An interpolation-matrix product would give the same values up to
/// rounding, but summed in a different order.)
pub fn resize_bilinear_tf1(x: &Tensor, out_h: i64, out_w: i64) -> Tensor {
    let (_, _, in_h, in_w) = x.size4().expect("[N, C, H, W] images");
    let device = x.device();
    let (lo_y, hi_y, dy) = tf1_axis(in_h, out_h, device);
    let (lo_x, hi_x, dx) = tf1_axis(in_w, out_w, device);
    let (top, bottom) = (x.index_select(2, &lo_y), x.index_select(2, &hi_y));
    let (in_00, in_01) = (top.index_select(3, &lo_x), top.index_select(3, &hi_x));
    let (in_10, in_11) = (bottom.index_select(3, &lo_x), bottom.index_select(3, &hi_x));
    let dx = dx.view([1, 1, 1, out_w]);
    let dy = dy.view([1, 1, out_h, 1]);
    let in_0 = &in_00 + (&in_01 - &in_00) * &dx;
    let in_1 = &in_10 + (&in_11 - &in_10) * &dx;
    &in_0 + (&in_1 - &in_0) * &dy
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TF1's rule on a case worked by hand: 2 -> 4 pixels samples source 0, 0.5, 1, 1.5, and
    /// the last two clamp to the edge pixel (half-pixel centres would sample -0.25, 0.25, ...).
    #[test]
    fn tf1_resize_samples_at_i_times_in_over_out() {
        let x = Tensor::from_slice(&[0f32, 8.]).view([1, 1, 1, 2]);
        let y = resize_bilinear_tf1(&x, 1, 4);
        assert_eq!(
            Vec::<f32>::try_from(&y.view([-1])).unwrap(),
            vec![0., 4., 8., 8.]
        );
        // Downsampling 4 -> 3: sources 0, 4/3, 8/3.
        let x = Tensor::from_slice(&[0f32, 3., 6., 9.]).view([1, 1, 4, 1]);
        let y = Vec::<f32>::try_from(&resize_bilinear_tf1(&x, 3, 1).view([-1])).unwrap();
        for (got, want) in y.iter().zip([0., 4., 8.]) {
            assert!((got - want).abs() < 1e-5, "{y:?}");
        }
    }
}
