//! Batch loader: a background thread cuts this rank's batches (already scaled to [-1, 1]) ahead of
//! the training loop, epoch after epoch, from the distributed sampler's shards.
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use tch::{Device, Tensor};

use super::dataset::{to_signed_unit, Dataset};
use super::sampler::DistributedSampler;

pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub epoch: u64,
}

pub struct Loader {
    rx: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
    device: Device,
}

impl Loader {
    /// Starts at global batch `start_batch` (counted from epoch 0), so a resumed run sees the data
    /// it would have seen without the interruption.
    pub fn new(
        data: &Dataset,
        sampler: DistributedSampler,
        batch_per_rank: usize,
        start_batch: u64,
        prefetch: usize,
        device: Device,
    ) -> Self {
        let images = data.images.shallow_clone();
        let labels = data.labels.shallow_clone();
        let (tx, rx) = sync_channel(prefetch.max(1));
        let per_epoch = sampler.batches_per_epoch() as u64;
        let worker = std::thread::spawn(move || {
            let mut epoch = start_batch / per_epoch;
            let mut skip = (start_batch % per_epoch) as usize;
            loop {
                let shard = sampler.shard(epoch);
                for chunk in shard.chunks_exact(batch_per_rank).skip(skip) {
                    let idx = Tensor::from_slice(chunk);
                    let batch = Batch {
                        images: to_signed_unit(&images.index_select(0, &idx)),
                        labels: labels.index_select(0, &idx),
                        epoch,
                    };
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
                skip = 0;
                epoch += 1;
            }
        });
        Self {
            rx: Some(rx),
            worker: Some(worker),
            device,
        }
    }

    pub fn next_batch(&mut self) -> Batch {
        let b = self
            .rx
            .as_ref()
            .expect("loader is open")
            .recv()
            .expect("loader thread died");
        Batch {
            images: b.images.to_device(self.device),
            labels: b.labels.to_device(self.device),
            epoch: b.epoch,
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel ends the worker at its next send.
        drop(self.rx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
