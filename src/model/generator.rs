//! SAGAN generator: SN linear to 4x4, residual up-blocks with class-conditional BN, attention where
//! the config places it, BN-ReLU-conv3-tanh tail.
use tch::{nn, Device, Tensor};

use super::attention::SelfAttention;
use super::batch_norm::{AffineBatchNorm, BnMode};
use super::blocks::UpBlock;
use super::spectral_norm::{SnConv2d, SnLinear, SnRegistry};
use crate::config::arch::Arch;
use crate::config::ModelConfig;
use crate::distributed::Comm;
use crate::error::Result;

pub struct Generator {
    pub vs: nn::VarStore,
    pub sn: SnRegistry,
    input: SnLinear,
    blocks: Vec<UpBlock>,
    /// attention[i] follows blocks[i].
    attention: Vec<Option<SelfAttention>>,
    bn: AffineBatchNorm,
    out: SnConv2d,
    input_ch: i64,
    pub z_dim: i64,
}

impl Generator {
    pub fn new(m: &ModelConfig, device: Device) -> Result<Self> {
        let arch = Arch::for_model(m)?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let sn = SnRegistry::new(m.sn_eps).normalising(m.g_spectral_norm);
        let input_ch = arch.g_input_mult * m.g_ch;
        let input = SnLinear::new(&sn, &root / "input", m.z_dim, 16 * input_ch, true);
        let mut blocks = Vec::new();
        let mut attention = Vec::new();
        let mut c = input_ch;
        for (i, (&mult, res)) in arch.g_blocks.iter().zip(arch.g_resolutions()).enumerate() {
            let c_out = mult * m.g_ch;
            blocks.push(UpBlock::new(&sn, &root / "blocks" / i, c, c_out, m));
            attention.push(
                m.g_attn_res
                    .contains(&res)
                    .then(|| SelfAttention::new(&sn, &root / "attention" / i, c_out, m.attention)),
            );
            c = c_out;
        }
        let bn = AffineBatchNorm::new(&root / "bn", c, m.bn_eps, m.bn_momentum);
        let out = SnConv2d::new(&sn, &root / "out", c, m.img_channels, 3, true);
        // sigma is the top singular value from the first forward on, not noise from random u, v.
        sn.warm_up();
        Ok(Self {
            vs,
            sn,
            input,
            blocks,
            attention,
            bn,
            out,
            input_ch,
            z_dim: m.z_dim,
        })
    }

    /// Cross-replica batch norm (`model.g_bn`): every batch norm takes its training statistics
    /// over the global batch of `comm`'s ranks. One rank keeps libtorch's own batch norm, whose
    /// statistics are those of the global batch already.
    pub fn across_ranks(&mut self, comm: &'static dyn Comm) {
        if comm.size() < 2 {
            return;
        }
        for block in &mut self.blocks {
            block.across_ranks(comm);
        }
        self.bn.across_ranks(comm);
    }

    pub fn forward(&self, z: &Tensor, y: &Tensor, mode: BnMode) -> Tensor {
        self.forward_with_maps(z, y, mode).0
    }

    /// Images in [-1, 1] and the attention maps of every attention block, in order.
    pub fn forward_with_maps(&self, z: &Tensor, y: &Tensor, mode: BnMode) -> (Tensor, Vec<Tensor>) {
        let mut h = super::channels_last(&self.input.forward(z).view([-1, self.input_ch, 4, 4]));
        let mut maps = Vec::new();
        for (block, attn) in self.blocks.iter().zip(&self.attention) {
            h = block.forward(&h, y, mode);
            if let Some(a) = attn {
                let (out, map) = a.forward_with_map(&h);
                h = out;
                maps.push(map);
            }
        }
        let h = self.bn.forward(&h, mode).relu();
        // Contiguous (NCHW): the output convolution runs channels-last (see SpectralNorm), and
        // everything downstream (grids, PNGs, evaluation, the Python example) views images as NCHW.
        (self.out.forward(&h).tanh().contiguous(), maps)
    }

    /// The names of the attention blocks (`attention.1`: after block 1), in order, as their
    /// variables are named in weights files.
    pub fn attention_names(&self) -> Vec<String> {
        (0..self.attention.len())
            .filter(|&i| self.attention[i].is_some())
            .map(|i| format!("attention.{i}"))
            .collect()
    }

    pub fn gammas(&self) -> Vec<Tensor> {
        self.attention
            .iter()
            .flatten()
            .map(|a| a.gamma.shallow_clone())
            .collect()
    }
}
