//! Batch loader: background threads cut this rank's batches (flipped as configured, already
//! scaled to [-1, 1]) ahead of the training loop, epoch after epoch, from the distributed
//! sampler's shards.
//!
//! With W threads, thread w builds global batches start + w, start + w + W, ...; the consumer
//! takes them round-robin, so batches arrive in order whatever the threads' timing. Each batch is
//! a function of (seed, epoch, position) only: the sampler's shuffle, and flips drawn from
//! (seed, epoch, sample index). A resumed run and another world size therefore see the same data.
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use tch::{Device, Kind, Tensor};

use super::dataset::{to_signed_unit, Dataset};
use super::flip;
use super::partition::DistributedSampler;
use crate::error::{Error, Result};

pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub epoch: u64,
}

/// How a loader cuts and prefetches batches.
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    pub batch_per_rank: usize,
    /// Global batch (counted from epoch 0) to start at, so a resumed run sees the data it would
    /// have seen without the interruption.
    pub start_batch: u64,
    /// Batches each thread keeps ready.
    pub prefetch: usize,
    /// Background threads.
    pub workers: usize,
    /// Mirror samples left to right, drawn per (seed, epoch, sample).
    pub flip: bool,
}

/// The float value of each uint8 level, computed by [`to_signed_unit`] itself so that the
/// loader's batches are bitwise what converting a uint8 tensor would give.
fn levels() -> Vec<f32> {
    let all = Tensor::arange(256, (Kind::Uint8, Device::Cpu));
    Vec::<f32>::try_from(&to_signed_unit(&all)).expect("256 floats")
}

/// Builds one rank's batch from sample `indices` of `epoch`: reads each image, mirrors it when its
/// flip says so, and converts through `lut` into `out` (CHW per sample).
#[allow(clippy::too_many_arguments)]
pub fn fill_batch(
    data: &Dataset,
    indices: &[i64],
    epoch: u64,
    seed: u64,
    flip: bool,
    lut: &[f32],
    scratch: &mut [u8],
    out: &mut [f32],
) -> Result<()> {
    let b = data.image_bytes();
    let w = data.resolution() as usize;
    for (&i, dst) in indices.iter().zip(out.chunks_exact_mut(b)) {
        data.read_image(i as usize, scratch)?;
        if flip && flip::flipped(seed, epoch, i as u64) {
            for (src_row, dst_row) in scratch.chunks_exact(w).zip(dst.chunks_exact_mut(w)) {
                for (d, &s) in dst_row.iter_mut().zip(src_row.iter().rev()) {
                    *d = lut[s as usize];
                }
            }
        } else {
            for (d, &s) in dst.iter_mut().zip(scratch.iter()) {
                *d = lut[s as usize];
            }
        }
    }
    Ok(())
}

pub struct Loader {
    rx: Vec<Receiver<Result<Batch>>>,
    workers: Vec<JoinHandle<()>>,
    next: usize,
    device: Device,
}

impl Loader {
    pub fn new(
        data: &Dataset,
        sampler: DistributedSampler,
        opts: &LoaderOptions,
        device: Device,
    ) -> Self {
        let lut: Arc<Vec<f32>> = Arc::new(levels());
        let sampler = Arc::new(sampler);
        let per_epoch = sampler.batches_per_epoch() as u64;
        let n_workers = opts.workers.max(1);
        let mut rx = Vec::new();
        let mut workers = Vec::new();
        for w in 0..n_workers {
            let (tx, r) = sync_channel::<Result<Batch>>(opts.prefetch.max(1));
            rx.push(r);
            let (data, sampler, lut, opts) =
                (data.clone(), sampler.clone(), lut.clone(), opts.clone());
            let worker = std::thread::Builder::new()
                .name(format!("sagan-loader-{w}"))
                .spawn(move || {
                    crate::host::cpu_threads::keep_helper_serial();
                    let bpr = opts.batch_per_rank;
                    let shape = [
                        bpr as i64,
                        data.channels(),
                        data.resolution(),
                        data.resolution(),
                    ];
                    let mut scratch = vec![0u8; data.image_bytes()];
                    let mut shard: (u64, Vec<i64>) = (u64::MAX, Vec::new());
                    let mut k = opts.start_batch + w as u64;
                    loop {
                        let (epoch, j) = (k / per_epoch, (k % per_epoch) as usize);
                        if shard.0 != epoch {
                            shard = (epoch, sampler.shard(epoch));
                        }
                        let indices = &shard.1[j * bpr..(j + 1) * bpr];
                        let mut pixels = vec![0f32; bpr * data.image_bytes()];
                        let batch = fill_batch(
                            &data,
                            indices,
                            epoch,
                            sampler.seed,
                            opts.flip,
                            &lut,
                            &mut scratch,
                            &mut pixels,
                        )
                        .and_then(|()| {
                            let labels: Vec<i64> =
                                indices.iter().map(|&i| data.labels()[i as usize]).collect();
                            Ok(Batch {
                                images: staged(Tensor::from_slice(&pixels).view(shape), device)?,
                                labels: staged(Tensor::from_slice(&labels), device)?,
                                epoch,
                            })
                        });
                        let failed = batch.is_err();
                        if tx.send(batch).is_err() || failed {
                            return;
                        }
                        k += n_workers as u64;
                    }
                })
                .expect("spawning a loader thread");
            workers.push(worker);
        }
        Self {
            rx,
            workers,
            next: 0,
            device,
        }
    }

    /// The next batch, on the loader's device. A read error (a file that vanished or a disk
    /// failure) is returned, not hidden.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let w = self.next % self.rx.len();
        self.next += 1;
        let b = self.rx[w].recv().map_err(|_| {
            Error::Train("a data loader thread stopped (see the error before this one)".into())
        })??;
        // From page-locked memory the copy is queued on the GPU's stream and the host goes on:
        // the step is not stalled until the GPU has run everything before it. libtorch's host
        // allocator keeps the page-locked block until the copy has run, so dropping the batch
        // here is safe.
        let to_device =
            |t: &Tensor| t.to_device_(self.device, t.kind(), self.device.is_cuda(), false);
        Ok(Batch {
            images: to_device(&b.images),
            labels: to_device(&b.labels),
            epoch: b.epoch,
        })
    }
}

/// A batch tensor as the loader thread hands it over: page-locked when the rank trains on a GPU,
/// so that its copy to the device does not wait for the GPU to catch up with the host.
fn staged(t: Tensor, device: Device) -> Result<Tensor> {
    if !device.is_cuda() {
        return Ok(t);
    }
    // libtorch's `_pin_memory`: the public `pin_memory`, given a device (tch always passes one),
    // prints a deprecation warning on every call.
    t.f_internal_pin_memory(device)
        .map_err(|e| Error::Train(format!("page-locking a batch for {device:?}: {e}")))
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channels ends each worker at its next send.
        self.rx.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
