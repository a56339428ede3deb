//! The CUDA driver, asked directly (through cudarc's dynamically loaded bindings): why libtorch
//! may see no GPU, which device a thread works on, and how much device memory is in use. Nothing
//! here panics where the driver library is missing.
use std::ffi::c_int;

use cudarc::driver::{result as cu, sys as cusys};

/// Whether libcuda.so.1 can be loaded at all.
fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda under cudarc's candidate names.
    unsafe { cusys::is_culib_present() }
}

/// What the driver says, for a "no CUDA" message: "the driver sees 2 device(s) (NVIDIA H100 ...)",
/// or why it cannot be asked.
pub fn driver_status() -> String {
    if !driver_present() {
        return "the CUDA driver library (libcuda.so.1) cannot be loaded: no NVIDIA driver on this \
                machine, or its library is not on the loader's path"
            .into();
    }
    if let Err(e) = cu::init() {
        return format!("the CUDA driver does not initialise (cuInit: {e})");
    }
    match cu::device::get_count() {
        Ok(0) => "the CUDA driver sees no device (check CUDA_VISIBLE_DEVICES)".into(),
        Ok(n) => {
            let name = cu::device::get(0)
                .and_then(cu::device::get_name)
                .unwrap_or_else(|e| format!("name unknown: {e}"));
            format!("the CUDA driver sees {n} device(s) (device 0: {name})")
        }
        Err(e) => format!("the CUDA driver cannot count its devices ({e})"),
    }
}

/// The devices the driver sees (0 without a driver).
pub fn device_count() -> i64 {
    if !driver_present() || cu::init().is_err() {
        return 0;
    }
    cu::device::get_count().map_or(0, i64::from)
}

/// The name of CUDA device `index`, if the driver answers.
pub fn device_name(index: usize) -> Option<String> {
    if !driver_present() {
        return None;
    }
    cu::init()
        .and_then(|()| cu::device::get(index as c_int))
        .and_then(cu::device::get_name)
        .ok()
}

/// Makes CUDA device `index` current on this thread: NCCL binds a communicator to the device
/// current at `ncclCommInitRank`. Uses the device's primary context, the one libtorch's runtime
/// uses, and keeps it retained for the life of the process.
pub fn bind_device(index: usize) -> std::result::Result<(), String> {
    if !driver_present() {
        return Err("cannot load the CUDA driver library (libcuda.so.1)".into());
    }
    let dev = cu::init()
        .and_then(|()| cu::device::get(index as c_int))
        .map_err(|e| format!("CUDA device {index}: {e}"))?;
    // SAFETY: `dev` came from cuDeviceGet; the primary context is retained, not created anew.
    unsafe { cu::primary_ctx::retain(dev).and_then(|ctx| cu::ctx::set_current(ctx)) }
        .map_err(|e| format!("making CUDA device {index} current: {e}"))
}

/// (bytes in use, bytes in all) on device `index`, from the driver: what every process and
/// libtorch's caching allocator hold, so an upper bound of this process's peak when read after
/// its work. `None` without a driver.
pub fn memory_in_use(index: usize) -> Option<(u64, u64)> {
    bind_device(index).ok()?;
    let (free, total) = cu::mem_get_info().ok()?;
    Some(((total - free) as u64, total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs no GPU: without a driver every question has an answer, and none panics.
    #[test]
    fn without_a_driver_everything_answers() {
        let status = driver_status();
        eprintln!("{status}");
        assert!(status.contains("CUDA driver"), "{status}");
        if !driver_present() {
            assert!(status.contains("libcuda.so.1"), "{status}");
            assert!(bind_device(0).unwrap_err().contains("libcuda.so.1"));
            assert_eq!(memory_in_use(0), None);
            assert_eq!(device_name(0), None);
        }
    }
}
