//! "This parameter's gradient is complete": libtorch's post-accumulate-grad hooks, through the
//! C++ shim in `csrc/grad_ready.cpp`, so that gradient buckets can be all-reduced while backward
//! is still computing the rest.
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use tch::Tensor;
use torch_sys::C_tensor;

use crate::error::{Error, Result};

type ReadyFn = unsafe extern "C" fn(ctx: *mut c_void, index: usize);

extern "C" {
    fn sagan_set_grad_ready_hook(
        param: *const C_tensor,
        f: ReadyFn,
        ctx: *mut c_void,
        index: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn sagan_clear_grad_ready_hook(param: *const C_tensor);
}

/// What runs when parameter `index`'s gradient is complete. It may run on libtorch's autograd
/// thread for the parameters' device (CUDA), while the thread that called `backward` waits.
pub type OnReady = Box<dyn Fn(usize) + Send + Sync>;

/// Hooks on a list of parameters, all calling one function with the parameter's index. Dropping
/// this removes them.
pub struct GradReadyHooks {
    params: Vec<Tensor>,
    // Boxed twice so that the hooks can hold a thin pointer to it; it lives as long as they do.
    on_ready: Box<OnReady>,
}

unsafe extern "C" fn trampoline(ctx: *mut c_void, index: usize) {
    // SAFETY: `ctx` is the address of the `OnReady` owned by the `GradReadyHooks` that registered
    // this hook, which removes its hooks before that box is freed.
    let on_ready = unsafe { &*(ctx as *const OnReady) };
    if catch_unwind(AssertUnwindSafe(|| on_ready(index))).is_err() {
        // Unwinding into libtorch's C++ is undefined behaviour; ending the rank ends the job.
        eprintln!("sagan: a gradient-ready hook panicked; aborting this rank");
        std::process::abort();
    }
}

impl GradReadyHooks {
    /// Registers `on_ready(i)` on `params[i]`, replacing any post-accumulate-grad hook they had.
    pub fn register(params: &[Tensor], on_ready: OnReady) -> Result<Self> {
        let hooks = Self {
            params: params.iter().map(|p| p.shallow_clone()).collect(),
            on_ready: Box::new(on_ready),
        };
        let ctx = &*hooks.on_ready as *const OnReady as *mut c_void;
        for (i, p) in hooks.params.iter().enumerate() {
            let mut err = [0 as c_char; 512];
            // SAFETY: `p` is a live tensor; `ctx` stays valid until `Drop` removes the hooks;
            // `err` is a writable buffer of the length passed.
            let rc = unsafe {
                sagan_set_grad_ready_hook(p.as_ptr(), trampoline, ctx, i, err.as_mut_ptr(), 512)
            };
            if rc != 0 {
                // SAFETY: the shim always NUL-terminates what it writes into `err`.
                let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
                return Err(Error::Dist(format!(
                    "registering the gradient-ready hook on parameter {i}: {msg}"
                )));
            }
        }
        Ok(hooks)
    }
}

impl Drop for GradReadyHooks {
    fn drop(&mut self) {
        for p in &self.params {
            // SAFETY: `p` is a live tensor (we hold a reference to it).
            unsafe { sagan_clear_grad_ready_hook(p.as_ptr()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tch::{Device, Kind};

    #[test]
    fn hooks_fire_once_per_backward_after_the_gradient_is_in_place_and_go_away_on_drop() {
        let a = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = Tensor::full([2], 2.0, (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let seen = Arc::new(Mutex::new(Vec::<(usize, f64)>::new()));
        let params = [a.shallow_clone(), b.shallow_clone()];
        let hooks = {
            let seen = seen.clone();
            let own: Vec<Tensor> = params.iter().map(|p| p.shallow_clone()).collect();
            let own = Mutex::new(own);
            GradReadyHooks::register(
                &params,
                Box::new(move |i| {
                    let g = own.lock().unwrap()[i].grad().sum(Kind::Double);
                    let g = f64::try_from(g).unwrap();
                    seen.lock().unwrap().push((i, g));
                }),
            )
            .unwrap()
        };
        // `a` is used twice: its hook still fires once, with the summed gradient already in .grad.
        let loss = (&a * 3.0).sum(Kind::Float) + (&a * &b.sum(Kind::Float)).sum(Kind::Float);
        loss.backward();
        let mut got = seen.lock().unwrap().clone();
        got.sort_by_key(|(i, _)| *i);
        assert_eq!(got, vec![(0, 3.0 * (3.0 + 4.0)), (1, 2.0 * 3.0)]);
        drop(hooks);
        seen.lock().unwrap().clear();
        (&a * &b.sum(Kind::Float)).sum(Kind::Float).backward();
        assert!(
            seen.lock().unwrap().is_empty(),
            "a removed hook still fired"
        );
    }
}
