//! The CUDA stream libtorch enqueues on, which tch does not bind: the NCCL backend runs its
//! collectives there, so that a reduction is ordered after the kernels that produced its buffer
//! (backward, also on the device's autograd thread) and before those that read it (Adam), on
//! whatever stream libtorch makes current, not only on the default one.
//!
//! c10_cuda's C++ functions are called by their mangled names, as `crate::host::autocast` calls
//! libtorch's (the pip wheel ships no CUDA runtime headers to compile a C++ shim against:
//! `cuda_runtime_api.h` is there, its `crt/` headers are not). Builds against a CPU-only libtorch
//! lack c10_cuda, and [`current_stream`] then says so.
use std::ffi::c_void;

/// Whether this binary links c10_cuda (a CUDA libtorch at build time).
pub fn built() -> bool {
    cfg!(sagan_cuda)
}

/// `c10::cuda::CUDAStream`, as laid out in `c10/cuda/CUDAStream.h` (torch 2.x): one
/// `c10::Stream`, which is a `c10::Device` (device type and index, one `int8_t` each) and an
/// `int64_t` stream id. Trivially copyable, so the C++ ABI returns it in two registers, as C
/// returns this struct.
#[cfg(sagan_cuda)]
#[repr(C)]
struct CudaStream {
    device_type: i8,
    device_index: i8,
    id: i64,
}

#[cfg(sagan_cuda)]
const _: () = assert!(std::mem::size_of::<CudaStream>() == 16);

#[cfg(sagan_cuda)]
extern "C" {
    /// `c10::cuda::getCurrentCUDAStream(c10::DeviceIndex)`.
    #[link_name = "_ZN3c104cuda20getCurrentCUDAStreamEa"]
    fn get_current_cuda_stream(device: i8) -> CudaStream;
    /// `c10::cuda::CUDAStream::stream() const`.
    #[link_name = "_ZNK3c104cuda10CUDAStream6streamEv"]
    fn cuda_stream_handle(stream: *const CudaStream) -> *mut c_void;
}

/// The calling thread's current CUDA stream for `device` (libtorch's default stream unless
/// something made another current), as a `cudaStream_t`.
pub fn current_stream(device: usize) -> Result<*mut c_void, String> {
    // The C++ functions throw without CUDA or for a bad index, and a C++ exception must not
    // reach Rust: both are ruled out first.
    let count = if tch::Cuda::is_available() {
        tch::Cuda::device_count()
    } else {
        0
    };
    if device as i64 >= count {
        return Err(format!(
            "no CUDA stream for device {device}: libtorch sees {count} CUDA device(s)"
        ));
    }
    current_stream_of_a_visible_device(device)
}

/// [`current_stream`] without its checks, for callers that have already made sure `device` is a
/// visible CUDA device (the NCCL communicator, at construction): one lookup per collective.
#[cfg(sagan_cuda)]
pub(super) fn current_stream_of_a_visible_device(device: usize) -> Result<*mut c_void, String> {
    let index = i8::try_from(device).map_err(|_| format!("CUDA device index {device}"))?;
    // SAFETY: CUDA is available and `index` names a visible device (the callers' precondition), so
    // neither function throws; `CudaStream` matches the C++ type's layout and calling
    // convention (see its documentation), and `stream` lives across the second call.
    let handle = unsafe {
        let stream = get_current_cuda_stream(index);
        cuda_stream_handle(&stream)
    };
    Ok(handle)
}

#[cfg(not(sagan_cuda))]
pub(super) fn current_stream_of_a_visible_device(_device: usize) -> Result<*mut c_void, String> {
    Err("this sagan was built against a libtorch without CUDA (no libc10_cuda.so)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The project's libtorch is the CUDA build, so c10_cuda is linked; without a GPU the
    /// question is answered, not thrown.
    #[test]
    fn c10_cuda_is_linked_and_a_missing_gpu_is_an_error() {
        assert!(built(), "c10_cuda is not linked (build.rs)");
        if tch::Cuda::is_available() {
            assert!(current_stream(0).is_ok());
            return;
        }
        let e = current_stream(0).unwrap_err();
        assert!(e.contains("0 CUDA device(s)"), "{e}");
    }
}
