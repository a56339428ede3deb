//! SAGAN projection discriminator: optimised first block, residual down-blocks, attention where the
//! config places it, ReLU, global sum pool, SN linear plus <SN embedding(y), h>.
use tch::{nn, Device, Tensor};

use super::attention::SelfAttention;
use super::blocks::DownBlock;
use super::spectral_norm::{SnEmbedding, SnLinear, SnRegistry};
use crate::config::arch::Arch;
use crate::config::ModelConfig;
use crate::error::Result;

pub struct Discriminator {
    pub vs: nn::VarStore,
    pub sn: SnRegistry,
    blocks: Vec<DownBlock>,
    attention: Vec<Option<SelfAttention>>,
    linear: SnLinear,
    embed: SnEmbedding,
}

impl Discriminator {
    pub fn new(m: &ModelConfig, device: Device) -> Result<Self> {
        let arch = Arch::for_model(m)?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let sn = SnRegistry::new(m.sn_eps);
        let mut blocks = Vec::new();
        let mut attention = Vec::new();
        let mut c = m.img_channels;
        for (i, (&(mult, down), res)) in arch.d_blocks.iter().zip(arch.d_resolutions()).enumerate()
        {
            let c_out = mult * m.d_ch;
            blocks.push(DownBlock::new(
                &sn,
                &root / "blocks" / i,
                c,
                c_out,
                down,
                i == 0,
            ));
            attention.push(
                m.d_attn_res
                    .contains(&res)
                    .then(|| SelfAttention::new(&sn, &root / "attention" / i, c_out, m.attention)),
            );
            c = c_out;
        }
        let linear = SnLinear::new(&sn, &root / "linear", c, 1, true);
        let embed = SnEmbedding::new(&sn, &root / "embed", m.num_classes, c);
        // sigma is the top singular value from the first forward on, not noise from random u, v.
        sn.warm_up();
        Ok(Self {
            vs,
            sn,
            blocks,
            attention,
            linear,
            embed,
        })
    }

    /// One logit per image.
    pub fn forward(&self, x: &Tensor, y: &Tensor) -> Tensor {
        let mut h = super::channels_last(x);
        for (block, attn) in self.blocks.iter().zip(&self.attention) {
            h = block.forward(&h);
            if let Some(a) = attn {
                h = a.forward(&h);
            }
        }
        let h = h.relu().sum_dim_intlist(&[2i64, 3][..], false, None);
        self.linear.forward(&h).squeeze_dim(1)
            + (self.embed.forward(y) * &h).sum_dim_intlist(&[1i64][..], false, None)
    }

    pub fn gammas(&self) -> Vec<Tensor> {
        self.attention
            .iter()
            .flatten()
            .map(|a| a.gamma.shallow_clone())
            .collect()
    }
}
