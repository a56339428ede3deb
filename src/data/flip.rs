//! Random horizontal flips that depend only on (seed, epoch, sample index).
//!
//! A flip drawn from a running generator would depend on how many batches this process has cut
//! since it started, so a resumed run or another world size would flip differently. Hashing the
//! triple instead gives every (epoch, sample) one fixed answer, whichever rank loads it and
//! whenever: resume stays bitwise exact and shards stay a partition of the same epoch.

/// Whether sample `index` is mirrored in `epoch` of a run seeded with `seed` (about half are).
pub fn flipped(seed: u64, epoch: u64, index: u64) -> bool {
    // SplitMix64's finaliser over a mix of the three words: nearby indices and epochs get
    // unrelated bits.
    let mut x = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(epoch.wrapping_mul(0xd1b5_4a32_d192_ed03))
        .wrapping_add(index.wrapping_mul(0xbf58_476d_1ce4_e5b9))
        ^ 0x5a5a_f11b_0000_0001;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    x >> 63 == 1
}

/// Mirrors a CHW image left to right in place (every row of every channel reversed).
pub fn mirror_chw(image: &mut [u8], width: usize) {
    for row in image.chunks_exact_mut(width) {
        row.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_half_flip_and_the_answer_is_fixed() {
        let n = 100_000u64;
        let count = (0..n).filter(|&i| flipped(7, 3, i)).count() as f64;
        assert!((count / n as f64 - 0.5).abs() < 0.01, "{count}");
        let a: Vec<bool> = (0..64).map(|i| flipped(7, 3, i)).collect();
        let b: Vec<bool> = (0..64).map(|i| flipped(7, 3, i)).collect();
        assert_eq!(a, b);
        // Another epoch or seed draws anew.
        let c: Vec<bool> = (0..64).map(|i| flipped(7, 4, i)).collect();
        let d: Vec<bool> = (0..64).map(|i| flipped(8, 3, i)).collect();
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn mirror_reverses_rows_of_each_channel() {
        // 2 channels, 2 rows, 3 columns.
        let mut img = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        mirror_chw(&mut img, 3);
        assert_eq!(img, vec![3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10]);
    }
}
