//! Architectures as data, keyed by image resolution. Widths are multiples of the configured base
//! width (`g_ch`, `d_ch`), so a CPU-sized model is a config change, not a different code path.

/// One resolution's layout.
#[derive(Debug, Clone, Copy)]
pub struct Arch {
    pub resolution: i64,
    /// Width multiple of G's 4x4 input (the SN linear layer's output).
    pub g_input_mult: i64,
    /// Output width multiple of each G up-block; each doubles the resolution.
    pub g_blocks: &'static [i64],
    /// D blocks: (output width multiple, downsample). The first is the optimised block.
    pub d_blocks: &'static [(i64, bool)],
}

const TABLE: &[Arch] = &[
    // CIFAR-10 style (SNGAN / StudioGAN resnet): constant width, D ends at 8x8.
    Arch {
        resolution: 32,
        g_input_mult: 1,
        g_blocks: &[1, 1, 1],
        d_blocks: &[(1, true), (1, true), (1, false), (1, false)],
    },
    Arch {
        resolution: 64,
        g_input_mult: 16,
        g_blocks: &[8, 4, 2, 1],
        d_blocks: &[(1, true), (2, true), (4, true), (8, true), (16, false)],
    },
    // The official SAGAN 128 model (base width 64: 1024, 512, 256, 128, 64).
    Arch {
        resolution: 128,
        g_input_mult: 16,
        g_blocks: &[16, 8, 4, 2, 1],
        d_blocks: &[
            (1, true),
            (2, true),
            (4, true),
            (8, true),
            (16, true),
            (16, false),
        ],
    },
    Arch {
        resolution: 256,
        g_input_mult: 16,
        g_blocks: &[16, 8, 8, 4, 2, 1],
        d_blocks: &[
            (1, true),
            (2, true),
            (4, true),
            (8, true),
            (8, true),
            (16, true),
            (16, false),
        ],
    },
];

impl Arch {
    pub fn for_resolution(resolution: i64) -> Option<Arch> {
        TABLE.iter().find(|a| a.resolution == resolution).copied()
    }

    /// The table entry for a model config, or an error naming the resolution.
    pub fn for_model(m: &crate::config::ModelConfig) -> crate::error::Result<Arch> {
        Self::for_resolution(m.resolution).ok_or_else(|| {
            crate::error::Error::Model(format!("no architecture for resolution {}", m.resolution))
        })
    }

    pub fn resolutions() -> Vec<i64> {
        TABLE.iter().map(|a| a.resolution).collect()
    }

    /// Feature-map side after each G block (where attention may follow).
    pub fn g_resolutions(&self) -> Vec<i64> {
        (1..=self.g_blocks.len()).map(|i| 4 << i).collect()
    }

    /// Feature-map side after each D block.
    pub fn d_resolutions(&self) -> Vec<i64> {
        let mut r = self.resolution;
        self.d_blocks
            .iter()
            .map(|&(_, down)| {
                if down {
                    r /= 2;
                }
                r
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_reach_the_image_resolution() {
        for a in TABLE {
            assert_eq!(*a.g_resolutions().last().unwrap(), a.resolution);
        }
    }

    #[test]
    fn official_128_layout() {
        let a = Arch::for_resolution(128).unwrap();
        assert_eq!(a.d_resolutions(), vec![64, 32, 16, 8, 4, 4]);
        assert_eq!(a.g_resolutions(), vec![8, 16, 32, 64, 128]);
    }
}
