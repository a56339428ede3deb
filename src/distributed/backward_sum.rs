//! A sum over the ranks that autograd goes through: forward, every rank's tensor summed; backward,
//! the gradient flowing into the sum is summed over the ranks too (a libtorch tensor hook,
//! through the C++ shim in `csrc/grad_ready.cpp`), so each rank's inputs get the gradient of
//! every rank's loss. Cross-replica batch norm sums its batch statistics with it; the hooks run in
//! backward's order, which is the same on every rank, so the collectives line up.
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use tch::Tensor;
use torch_sys::C_tensor;

use super::Comm;
use crate::error::{Error, Result};

type ReduceFn = unsafe extern "C" fn(ctx: *mut c_void, grad: *mut C_tensor);

extern "C" {
    fn sagan_add_reduce_grad_hook(
        t: *const C_tensor,
        f: ReduceFn,
        ctx: *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

/// The communicators hooks may name, one leaked cell each, so a hook's context is a thin pointer
/// that never dangles (a process has one or two communicators; they are never freed).
static CELLS: Mutex<Vec<Cell>> = Mutex::new(Vec::new());

struct Cell(&'static &'static dyn Comm);

// SAFETY: the list only holds and compares the cells' addresses across threads; a communicator
// is used through a cell by the thread running the backward that the forward's rank started,
// as it is used everywhere else.
unsafe impl Send for Cell {}

fn cell(comm: &'static dyn Comm) -> &'static &'static dyn Comm {
    let mut cells = CELLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cells
        .iter()
        .find(|c| std::ptr::addr_eq(*c.0 as *const dyn Comm, comm))
    {
        return c.0;
    }
    let leaked: &'static &'static dyn Comm = Box::leak(Box::new(comm));
    cells.push(Cell(leaked));
    leaked
}

unsafe extern "C" fn reduce_grad(ctx: *mut c_void, grad: *mut C_tensor) {
    // SAFETY: `ctx` is a cell from `cell`, leaked and never freed.
    let comm: &'static dyn Comm = unsafe { *(ctx as *const &'static dyn Comm) };
    // SAFETY: `grad` is the hook's own live copy of the gradient for the duration of this call;
    // `clone_from_ptr` takes a second handle to it (same storage) and leaves the original alone.
    let mut g = unsafe { Tensor::clone_from_ptr(grad) };
    match catch_unwind(AssertUnwindSafe(|| comm.all_reduce_sum(&mut g))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            // An error cannot travel back through libtorch's C++; ending the rank ends the job.
            eprintln!("sagan: summing a gradient over the ranks during backward failed: {e}");
            std::process::abort();
        }
        Err(_) => {
            eprintln!("sagan: summing a gradient over the ranks during backward panicked");
            std::process::abort();
        }
    }
}

/// `local` summed over the ranks. When `local` requires grad, the result's gradient is summed
/// over the ranks in backward before it reaches `local`: the gradient of the sum of every
/// rank's loss. Collective, forward and backward.
pub fn sum_over_ranks(local: &Tensor, comm: &'static dyn Comm) -> Result<Tensor> {
    let mut summed = local.detach().copy().contiguous();
    comm.all_reduce_sum(&mut summed)?;
    if !local.requires_grad() {
        return Ok(summed);
    }
    // The value is exactly `summed` (local - local.detach() is exactly 0); the gradient reaches
    // `local` unchanged, after the hook has summed it.
    let out = summed + (local - local.detach());
    let ctx = cell(comm) as *const &'static dyn Comm as *mut c_void;
    let mut err = [0 as c_char; 512];
    // SAFETY: `out` is a live tensor that requires grad; `ctx` never dangles (see `cell`); `err`
    // is a writable buffer of the length passed.
    let rc = unsafe {
        sagan_add_reduce_grad_hook(out.as_ptr(), reduce_grad, ctx, err.as_mut_ptr(), 512)
    };
    if rc != 0 {
        // SAFETY: the shim always NUL-terminates what it writes into `err`.
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
        return Err(Error::Dist(format!(
            "registering the backward sum over the ranks: {msg}"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Two "ranks" as far as one process can tell: every sum doubles.
    struct Doubling;

    impl Comm for Doubling {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn name(&self) -> &'static str {
            "doubling"
        }
        fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
            let _ = t.g_mul_scalar_(2.0);
            Ok(())
        }
        fn broadcast(&self, _t: &mut Tensor, _root: usize) -> Result<()> {
            Ok(())
        }
        fn broadcast_bytes(&self, _bytes: &mut Vec<u8>, _root: usize) -> Result<()> {
            Ok(())
        }
        fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
            Ok(vec![bytes.to_vec(); 2])
        }
        fn gather_bytes(&self, _b: &[u8], _root: usize) -> Result<Option<Vec<Vec<u8>>>> {
            Ok(None)
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn forward_and_backward_are_both_summed() {
        static COMM: Doubling = Doubling;
        let x = Tensor::from_slice(&[1.0f64, 2.0, 3.0]).set_requires_grad(true);
        let s = sum_over_ranks(&(&x * 1.0), &COMM).unwrap();
        assert_eq!(
            Vec::<f64>::try_from(&s.detach()).unwrap(),
            vec![2.0, 4.0, 6.0]
        );
        // d/dx of sum(s * w) is w, summed over the two "ranks": 2w.
        let w = Tensor::from_slice(&[1.0f64, 10.0, 100.0]);
        (&s * &w).sum(Kind::Double).backward();
        assert_eq!(
            Vec::<f64>::try_from(&x.grad()).unwrap(),
            vec![2.0, 20.0, 200.0]
        );
        // Without grad: just the forward sum, no hook.
        let plain = Tensor::ones([2], (Kind::Float, Device::Cpu));
        let s = sum_over_ranks(&plain, &COMM).unwrap();
        assert!(!s.requires_grad());
        assert_eq!(Vec::<f32>::try_from(&s).unwrap(), vec![2.0, 2.0]);
        assert!(
            std::ptr::eq(cell(&COMM), cell(&COMM)),
            "one cell per communicator"
        );
    }
}
