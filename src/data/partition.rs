//! Distributed sampler: one shuffle per epoch from (seed, epoch), identical on every rank; rank r
//! takes positions r, r + W, r + 2W, ... so shards are disjoint and equal.
use rand_core::{RngCore, SeedableRng};

pub struct DistributedSampler {
    pub len: usize,
    pub rank: usize,
    pub world: usize,
    pub seed: u64,
    /// Drop the tail that does not fill a whole global batch (else pad by wrapping around).
    pub drop_remainder: bool,
    pub global_batch: usize,
}

impl DistributedSampler {
    /// A single process's sampler over `len` samples, whole batches only (benchmarks, tests).
    pub fn one_rank(len: usize, global_batch: usize, seed: u64) -> Self {
        Self {
            len,
            rank: 0,
            world: 1,
            seed,
            drop_remainder: true,
            global_batch,
        }
    }

    /// Global batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_remainder {
            self.len / self.global_batch
        } else {
            self.len.div_ceil(self.global_batch)
        }
    }

    /// The whole epoch's order, the same on every rank.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        let mut rng =
            rand_pcg::Pcg64::seed_from_u64(self.seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let total = self.batches_per_epoch() * self.global_batch;
        if total <= order.len() {
            order.truncate(total);
        } else {
            let pad: Vec<usize> = order
                .iter()
                .cycle()
                .take(total - order.len())
                .copied()
                .collect();
            order.extend(pad);
        }
        order
    }

    /// This rank's indices for the epoch, in batch order.
    pub fn shard(&self, epoch: u64) -> Vec<i64> {
        self.epoch_order(epoch)
            .into_iter()
            .skip(self.rank)
            .step_by(self.world)
            .map(|i| i as i64)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn sampler(rank: usize, world: usize, drop: bool) -> DistributedSampler {
        DistributedSampler {
            len: 103,
            rank,
            world,
            seed: 7,
            drop_remainder: drop,
            global_batch: 10,
        }
    }

    #[test]
    fn shards_are_disjoint_equal_and_cover_the_epoch() {
        let shards: Vec<Vec<i64>> = (0..2).map(|r| sampler(r, 2, true).shard(0)).collect();
        assert_eq!(shards[0].len(), 50);
        assert_eq!(shards[1].len(), 50);
        let a: HashSet<_> = shards[0].iter().collect();
        assert!(shards[1].iter().all(|i| !a.contains(i)));
        let union: HashSet<i64> = shards.concat().into_iter().collect();
        let expected: HashSet<i64> = sampler(0, 2, true)
            .epoch_order(0)
            .into_iter()
            .map(|i| i as i64)
            .collect();
        assert_eq!(union, expected);
    }

    #[test]
    fn padding_covers_every_sample() {
        let shards: Vec<Vec<i64>> = (0..2).map(|r| sampler(r, 2, false).shard(3)).collect();
        assert_eq!(shards[0].len(), 55);
        let union: HashSet<i64> = shards.concat().into_iter().collect();
        assert_eq!(union.len(), 103);
    }

    #[test]
    fn new_epoch_new_order_same_on_every_rank() {
        let s = sampler(0, 1, true);
        assert_ne!(s.epoch_order(0), s.epoch_order(1));
        assert_eq!(s.epoch_order(1), sampler(1, 2, true).epoch_order(1));
    }
}
