//! Mixed precision for the training step's forwards (`train.autocast`): libtorch's autocast, on
//! the rank's own device, in bf16.
//!
//! tch binds only the CUDA switch, and leaves autocast's dtype at its fp16 default; fp16 needs a
//! loss scaler, bf16 has fp32's exponent range and does not. The per-device switch and the dtype
//! setter are libtorch C++ functions with no C binding, called here by their mangled names
//! (torch 2.x, `ATen/autocast_mode.h`; the symbols are checked when the binary links).
use tch::Device;

use crate::config::Autocast;

// c10::DeviceType and c10::ScalarType are `enum class : int8_t`, passed as integers.
const DEVICE_CPU: i8 = 0;
const DEVICE_CUDA: i8 = 1;
const SCALAR_BFLOAT16: i8 = 15;

extern "C" {
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn is_autocast_enabled(device_type: i8) -> bool;
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn set_autocast_enabled(device_type: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn get_autocast_dtype(device_type: i8) -> i8;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn set_autocast_dtype(device_type: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast17increment_nestingEv"]
    fn increment_nesting() -> i32;
    #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
    fn decrement_nesting() -> i32;
    #[link_name = "_ZN2at8autocast11clear_cacheEv"]
    fn clear_cache();
}

/// Autocast on for the calling thread while it lives (libtorch keeps the state per thread);
/// dropping it restores what was there before, so guards nest.
pub struct Guard {
    device_type: i8,
    was_enabled: bool,
    was_dtype: i8,
}

impl Guard {
    /// Autocast in `mode` on `device`'s type; `None` (nothing changed) for [`Autocast::Off`].
    pub fn new(mode: Autocast, device: Device) -> Option<Self> {
        let dtype = match mode {
            Autocast::Off => return None,
            Autocast::Bf16 => SCALAR_BFLOAT16,
        };
        let device_type = device_type(device);
        // SAFETY: plain functions of libtorch's thread-local autocast state, taking and returning
        // integers and bools; valid device types and dtypes only.
        unsafe {
            let guard = Self {
                device_type,
                was_enabled: is_autocast_enabled(device_type),
                was_dtype: get_autocast_dtype(device_type),
            };
            set_autocast_dtype(device_type, dtype);
            set_autocast_enabled(device_type, true);
            increment_nesting();
            Some(guard)
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: as in `Guard::new`; the cache of casted weights is cleared when the outermost
        // autocast region ends, as torch.autocast does.
        unsafe {
            if decrement_nesting() == 0 {
                clear_cache();
            }
            set_autocast_enabled(self.device_type, self.was_enabled);
            set_autocast_dtype(self.device_type, self.was_dtype);
        }
    }
}

/// Autocast off on the calling thread for `device`'s type while it lives, as
/// `torch.autocast(enabled=False)` does: for the numerics that must stay fp32 whoever calls them
/// (spectral norm's power iteration, whose `mv` CUDA autocast would run in bf16). Dropping it
/// restores what was there before.
pub struct Fp32Guard {
    device_type: i8,
    was_enabled: bool,
}

impl Fp32Guard {
    pub fn new(device: Device) -> Self {
        let device_type = device_type(device);
        // SAFETY: as in `Guard::new`.
        unsafe {
            let guard = Self {
                device_type,
                was_enabled: is_autocast_enabled(device_type),
            };
            set_autocast_enabled(device_type, false);
            guard
        }
    }
}

impl Drop for Fp32Guard {
    fn drop(&mut self) {
        // SAFETY: as in `Guard::new`.
        unsafe { set_autocast_enabled(self.device_type, self.was_enabled) }
    }
}

/// Runs `f` in fp32 on `device`, autocast or not around it.
pub fn fp32<T>(device: Device, f: impl FnOnce() -> T) -> T {
    let _guard = Fp32Guard::new(device);
    f()
}

fn device_type(device: Device) -> i8 {
    match device {
        Device::Cuda(_) => DEVICE_CUDA,
        _ => DEVICE_CPU,
    }
}

/// Runs `f` under autocast in `mode` on `device` (straight through for [`Autocast::Off`]).
pub fn run<T>(mode: Autocast, device: Device, f: impl FnOnce() -> T) -> T {
    let _guard = Guard::new(mode, device);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    fn conv_kind() -> Kind {
        let x = Tensor::ones([1, 2, 4, 4], (Kind::Float, Device::Cpu));
        let w = Tensor::ones([3, 2, 3, 3], (Kind::Float, Device::Cpu));
        x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
            .kind()
    }

    #[test]
    fn bf16_autocast_covers_the_region_and_nests() {
        assert_eq!(conv_kind(), Kind::Float);
        run(Autocast::Off, Device::Cpu, || {
            assert_eq!(conv_kind(), Kind::Float)
        });
        run(Autocast::Bf16, Device::Cpu, || {
            assert_eq!(conv_kind(), Kind::BFloat16);
            run(Autocast::Bf16, Device::Cpu, || {
                assert_eq!(conv_kind(), Kind::BFloat16)
            });
            // The inner region's end leaves the outer one on.
            assert_eq!(conv_kind(), Kind::BFloat16);
        });
        assert_eq!(conv_kind(), Kind::Float);
        // SAFETY: a read of the thread-local state the guards restored.
        assert!(!unsafe { is_autocast_enabled(DEVICE_CPU) });
    }

    #[test]
    fn an_fp32_region_inside_autocast_computes_in_fp32_and_ends_where_it_began() {
        run(Autocast::Bf16, Device::Cpu, || {
            fp32(Device::Cpu, || {
                assert_eq!(conv_kind(), Kind::Float);
                let m = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
                assert_eq!(m.mm(&m).kind(), Kind::Float);
            });
            assert_eq!(conv_kind(), Kind::BFloat16);
        });
        fp32(Device::Cpu, || assert_eq!(conv_kind(), Kind::Float));
        assert_eq!(conv_kind(), Kind::Float);
    }
}
