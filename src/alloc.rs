//! The C allocator's policy for CPU tensors (`train.host_memory`).
//!
//! libtorch allocates CPU tensors with the C library's `posix_memalign`. By default glibc serves
//! blocks above its mmap threshold with a fresh `mmap` and unmaps them when freed, so large
//! activations come back every step as new pages: a page fault per 4 KiB, zeroed by the kernel,
//! with the threads of one process queueing on its address-space lock. Serving everything from
//! the heap and never trimming it lets each step reuse the previous step's pages, but the heap
//! fragments: one CIFAR-10 process with two threads peaked at 2.2 GiB that way, against 1.7 GiB
//! when only blocks of 32 MiB and more (a handful of activations per step) are mapped, for
//! 3-5 % of the speed. (PyTorch leaves all this to the user: `MALLOC_MMAP_MAX_`, or
//! jemalloc/tcmalloc by LD_PRELOAD.)
use crate::config::HostMemory;

/// Sets the policy (glibc only; elsewhere nothing changes). Call before the first large
/// allocation: blocks already allocated keep where they are.
pub fn apply(policy: HostMemory) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // glibc's malloc.h; 32 MiB is the largest mmap threshold glibc accepts on 64-bit, and
        // 65536 its default count of mapped blocks.
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        const M_MMAP_MAX: c_int = -4;
        let settings: &[(c_int, c_int)] = match policy {
            HostMemory::MapLarge => &[
                (M_MMAP_MAX, 65536),
                (M_MMAP_THRESHOLD, 32 << 20),
                (M_TRIM_THRESHOLD, c_int::MAX),
            ],
            HostMemory::KeepAll => &[(M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, c_int::MAX)],
            HostMemory::System => &[],
        };
        for &(param, value) in settings {
            // SAFETY: mallopt only sets allocator parameters; each value is valid for its key.
            unsafe {
                mallopt(param, value);
            }
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = policy;
}
