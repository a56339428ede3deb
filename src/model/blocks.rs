//! Residual blocks of the official SAGAN code.
use tch::{nn, Tensor};

use super::batch_norm::{BnMode, ConditionalBatchNorm};
use super::spectral_norm::{SnConv2d, SnRegistry};
use crate::config::ModelConfig;
use crate::distributed::Comm;

fn upsample(x: &Tensor) -> Tensor {
    let (_, _, h, w) = x.size4().expect("NCHW");
    x.upsample_nearest2d([h * 2, w * 2], None, None)
}

fn downsample(x: &Tensor) -> Tensor {
    x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>)
}

/// G block: CBN-ReLU-up-conv3-CBN-ReLU-conv3, shortcut up-conv1.
pub struct UpBlock {
    bn0: ConditionalBatchNorm,
    conv1: SnConv2d,
    bn1: ConditionalBatchNorm,
    conv2: SnConv2d,
    shortcut: SnConv2d,
}

impl UpBlock {
    pub fn new(reg: &SnRegistry, p: nn::Path, c_in: i64, c_out: i64, m: &ModelConfig) -> Self {
        let cbn = |name: &str, c| {
            ConditionalBatchNorm::new(&p / name, c, m.num_classes, m.bn_eps, m.bn_momentum)
        };
        Self {
            bn0: cbn("bn0", c_in),
            conv1: SnConv2d::new(reg, &p / "conv1", c_in, c_out, 3, true),
            bn1: cbn("bn1", c_out),
            conv2: SnConv2d::new(reg, &p / "conv2", c_out, c_out, 3, true),
            shortcut: SnConv2d::new(reg, &p / "shortcut", c_in, c_out, 1, true),
        }
    }

    /// Its batch norms take training statistics over `comm`'s ranks.
    pub fn across_ranks(&mut self, comm: &'static dyn Comm) {
        self.bn0.across_ranks(comm);
        self.bn1.across_ranks(comm);
    }

    pub fn forward(&self, x: &Tensor, y: &Tensor, mode: BnMode) -> Tensor {
        let h = upsample(&self.bn0.forward(x, y, mode).relu());
        let h = self.conv1.forward(&h);
        let h = self.conv2.forward(&self.bn1.forward(&h, y, mode).relu());
        // A 1x1 convolution is a per-pixel affine map, so it commutes with nearest upsampling:
        // convolving before upsampling is the same function at a quarter of the FLOPs.
        upsample(&self.shortcut.forward(x)) + h
    }
}

/// D block: ReLU-conv3-ReLU-conv3-[pool], shortcut conv1-[pool] when shape changes.
/// The optimised first block has no leading ReLU and pools before its shortcut conv.
pub struct DownBlock {
    conv1: SnConv2d,
    conv2: SnConv2d,
    shortcut: Option<SnConv2d>,
    downsample: bool,
    optimised: bool,
}

impl DownBlock {
    pub fn new(
        reg: &SnRegistry,
        p: nn::Path,
        c_in: i64,
        c_out: i64,
        downsample: bool,
        optimised: bool,
    ) -> Self {
        let needs_shortcut = optimised || downsample || c_in != c_out;
        Self {
            conv1: SnConv2d::new(reg, &p / "conv1", c_in, c_out, 3, true),
            conv2: SnConv2d::new(reg, &p / "conv2", c_out, c_out, 3, true),
            shortcut: needs_shortcut
                .then(|| SnConv2d::new(reg, &p / "shortcut", c_in, c_out, 1, true)),
            downsample,
            optimised,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let pool = |t: Tensor| if self.downsample { downsample(&t) } else { t };
        let h = if self.optimised {
            x.shallow_clone()
        } else {
            x.relu()
        };
        let h = pool(self.conv2.forward(&self.conv1.forward(&h).relu()));
        let s = match (&self.shortcut, self.optimised) {
            (Some(conv), true) => conv.forward(&pool(x.shallow_clone())),
            // Average pooling and a 1x1 convolution are both linear per pixel and commute:
            // pooling first is the same function at a quarter of the FLOPs.
            (Some(conv), false) => conv.forward(&pool(x.shallow_clone())),
            (None, _) => x.shallow_clone(),
        };
        s + h
    }
}
