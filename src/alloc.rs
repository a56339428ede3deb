//! The C allocator's policy for training on CPUs.
//!
//! libtorch allocates CPU tensors with the C library's `posix_memalign`. glibc serves blocks above
//! its mmap threshold (at most 32 MiB) with a fresh `mmap` and unmaps them when freed, so every
//! large activation of every step (64 images x 256 channels x 32 x 32 floats is 64 MiB) comes
//! back as new pages: a page fault per 4 KiB, zeroed by the kernel, with the threads of one
//! process queueing on its address-space lock. Keeping freed memory in the heap instead lets
//! each step reuse the previous step's pages; the resident set stays at its first-step peak.
//! (PyTorch leaves this to the user: `MALLOC_MMAP_MAX_`, or jemalloc/tcmalloc by LD_PRELOAD.)

/// Serves all allocations from the heap and never returns its top to the system (glibc only;
/// elsewhere nothing changes). Call before the first large allocation.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // glibc's malloc.h.
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_MAX: c_int = -4;
        // SAFETY: mallopt only sets allocator parameters; both values are valid for these keys.
        unsafe {
            mallopt(M_MMAP_MAX, 0);
            mallopt(M_TRIM_THRESHOLD, c_int::MAX);
        }
    }
}
