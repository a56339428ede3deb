//! Who runs libtorch's intra-op threads: the training thread only.
//!
//! Every thread that runs a libtorch op big enough to split starts an OpenMP team of its own,
//! sized by the process default (all cores). Once the process holds more OpenMP threads than
//! there are cores, libgomp stops spinning between parallel regions and parks its workers, so
//! every op of the step then pays a futex wake-up. On two cores the loader's threads (one
//! `Tensor::from_slice` per batch) were enough to do that, and one process with two threads
//! lost to PyTorch on the small model.

/// Sets the training thread's intra-op thread count and fixes it for this thread: libtorch reads
/// the process-wide count lazily, once per thread, so without the read here a later
/// [`keep_helper_serial`] on another thread could lower it.
pub fn pin_training_threads(n: i32) {
    tch::set_num_threads(n);
    let _ = tch::get_num_threads();
}

/// Runs the calling helper thread's libtorch ops (loader batches, checkpoint copies) on that
/// thread alone. Call at the start of the thread, after [`pin_training_threads`].
pub fn keep_helper_serial() {
    tch::set_num_threads(1);
}
