//! Gradient averaging over a few large flat buckets, each all-reduced once, so a network costs a
//! handful of collectives instead of one per tensor. The trainer's buckets are slices of Adam's
//! flat gradient tensor (`over_flat`: nothing is copied); `new` alone copies in and out.
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tch::{Kind, Tensor};

use super::comm::{Comm, Started};
use super::grad_ready::GradReadyHooks;
use crate::error::{Error, Result};

/// Groups consecutive tensors into buckets of at most `bucket_bytes` (0 = one bucket); a tensor
/// larger than the limit gets a bucket of its own.
pub fn plan_buckets(sizes_bytes: &[usize], bucket_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut acc = 0;
    for (i, &s) in sizes_bytes.iter().enumerate() {
        if bucket_bytes > 0 && acc > 0 && acc + s > bucket_bytes {
            out.push(start..i);
            start = i;
            acc = 0;
        }
        acc += s;
    }
    if start < sizes_bytes.len() {
        out.push(start..sizes_bytes.len());
    }
    out
}

/// Gradient averaging for one network. The flat bucket buffers live as long as the network:
/// reusing the same memory each step lets MPI's transports reuse their registrations, where a fresh
/// buffer per step made the average several times slower than the bare all-reduce.
pub struct GradientBuckets {
    net: String,
    params: Vec<(String, Tensor)>,
    ranges: Vec<std::ops::Range<usize>>,
    buffers: Vec<Tensor>,
    /// The buffers are slices of the gradients' own flat tensor: nothing to copy in or out.
    in_place: bool,
    /// Seconds spent inside the all-reduce collectives themselves (waiting for the other ranks
    /// included), since the last [`GradientBuckets::take_comm_seconds`].
    comm_seconds: f64,
    /// Set by [`GradientBuckets::overlap_with_backward`].
    overlap: Option<Overlap>,
}

impl GradientBuckets {
    /// `params` must already have gradient tensors (see [`crate::train::adam::Adam::new`]), so that
    /// every rank issues the same collectives.
    pub fn new(net: &str, params: &[(String, Tensor)], bucket_bytes: usize) -> Result<Self> {
        let mut sizes = Vec::with_capacity(params.len());
        for (name, p) in params {
            if !p.grad().defined() {
                return Err(Error::Train(format!(
                    "{net} parameter {name} has no gradient tensor"
                )));
            }
            sizes.push(p.numel() * p.kind().elt_size_in_bytes());
        }
        let ranges = plan_buckets(&sizes, bucket_bytes);
        let buffers = ranges
            .iter()
            .map(|r| {
                let n: i64 = params[r.clone()]
                    .iter()
                    .map(|(_, p)| p.numel() as i64)
                    .sum();
                let (_, first) = &params[r.start];
                Tensor::zeros([n], (first.kind(), first.device()))
            })
            .collect();
        Ok(Self {
            net: net.to_string(),
            params: params
                .iter()
                .map(|(n, p)| (n.clone(), p.shallow_clone()))
                .collect(),
            ranges,
            buffers,
            in_place: false,
            comm_seconds: 0.0,
            overlap: None,
        })
    }

    /// Buckets over gradients that already lie back to back in `flat_grad`, in the order of
    /// `params` (as [`crate::train::adam::Adam`] keeps them): each bucket is a slice of it, so
    /// averaging copies nothing.
    pub fn over_flat(
        net: &str,
        params: &[(String, Tensor)],
        flat_grad: &Tensor,
        bucket_bytes: usize,
    ) -> Result<Self> {
        let mut b = Self::new(net, params, bucket_bytes)?;
        let mut offset = 0;
        for (range, buffer) in b.ranges.iter().zip(&mut b.buffers) {
            let n = buffer.numel() as i64;
            for (name, p) in &params[range.clone()] {
                let expected = flat_grad.narrow(0, offset, p.numel() as i64);
                offset += p.numel() as i64;
                if p.grad().data_ptr() != expected.data_ptr() {
                    return Err(Error::Train(format!(
                        "{net} parameter {name}: its gradient is not where the flat gradient \
                         tensor says"
                    )));
                }
            }
            *buffer = flat_grad.narrow(0, offset - n, n);
        }
        b.in_place = true;
        Ok(b)
    }

    /// Averages the gradients over all ranks in place and returns the squared global gradient
    /// norm: a 0-dim f64 tensor on the gradients' device, not read to the host, so that a GPU
    /// step is never stalled here. A NaN or infinity anywhere makes it non-finite; the trainer
    /// reads it with the step's statistics and then asks [`GradientBuckets::not_finite`] for
    /// the culprits.
    pub fn all_reduce(&mut self, comm: &dyn Comm) -> Result<Tensor> {
        if !self.in_place {
            return self.all_reduce_copying(comm);
        }
        match self.overlap.as_ref().and_then(|o| o.finish()) {
            // Backward's hooks started the sums (see `overlap_with_backward`).
            Some((sums, seconds)) => {
                self.comm_seconds += seconds;
                sums?;
            }
            None if comm.size() > 1 => {
                for flat in &mut self.buffers {
                    let t0 = Instant::now();
                    comm.all_reduce_sum(flat)?;
                    self.comm_seconds += t0.elapsed().as_secs_f64();
                }
            }
            None => {}
        }
        Ok(self.averaged_norm(comm.size()))
    }

    /// [`GradientBuckets::all_reduce`] for buckets that are not the gradients' own memory: each
    /// is filled from the gradients, summed and written back.
    fn all_reduce_copying(&mut self, comm: &dyn Comm) -> Result<Tensor> {
        let world = comm.size() as f64;
        let mut sq_norm: Option<Tensor> = None;
        let _guard = tch::no_grad_guard();
        for (range, flat) in self.ranges.iter().zip(&mut self.buffers) {
            let grads: Vec<Tensor> = self.params[range.clone()]
                .iter()
                .map(|(_, p)| p.grad().view([-1]))
                .collect();
            let sq = if comm.size() > 1 {
                let _ = Tensor::f_cat_out(flat, &grads, 0)?;
                let t0 = Instant::now();
                comm.all_reduce_sum(flat)?;
                self.comm_seconds += t0.elapsed().as_secs_f64();
                let _ = flat.g_div_scalar_(world);
                // One op for the whole bucket: per-tensor copies cost more in dispatch than
                // in bytes.
                let sizes: Vec<i64> = grads.iter().map(|g| g.numel() as i64).collect();
                flat.f_split_with_sizes_copy_out(&grads, sizes.as_slice(), 0)?;
                // One pass, no temporary: the norm also carries any NaN or infinity.
                flat.norm().to_kind(Kind::Double).square()
            } else {
                // A single rank only needs the norm: no copy at all.
                let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
                Tensor::stack(&norms, 0)
                    .to_kind(Kind::Double)
                    .square()
                    .sum(Kind::Double)
            };
            sq_norm = Some(match sq_norm {
                Some(acc) => acc + sq,
                None => sq,
            });
        }
        Ok(sq_norm.unwrap_or_else(|| Tensor::zeros([], (Kind::Double, tch::Device::Cpu))))
    }

    /// From now on, [`GradientBuckets::arm`] makes the next backward start each bucket's
    /// all-reduce as soon as backward has completed all of the bucket's gradients, last bucket
    /// first (backward's order), instead of all at [`GradientBuckets::all_reduce`]. Needs the
    /// buckets of [`GradientBuckets::over_flat`], which the gradients are accumulated into.
    pub fn overlap_with_backward(&mut self) -> Result<()> {
        if !self.in_place {
            return Err(Error::Dist(format!(
                "{}: overlapping the all-reduce with backward needs gradients in flat buckets",
                self.net
            )));
        }
        let mut bucket_of = vec![0; self.params.len()];
        for (b, range) in self.ranges.iter().enumerate() {
            bucket_of[range.clone()].fill(b);
        }
        let state = Arc::new(Mutex::new(InFlight {
            comm: None,
            names: self.params.iter().map(|(n, _)| n.clone()).collect(),
            sizes: self.ranges.iter().map(|r| r.len()).collect(),
            bucket_of,
            missing: Vec::new(),
            arrived: Vec::new(),
            buffers: self.buffers.iter().map(|b| b.shallow_clone()).collect(),
            started: Vec::new(),
            error: None,
            seconds: 0.0,
        }));
        let hooked = state.clone();
        let params: Vec<Tensor> = self.params.iter().map(|(_, p)| p.shallow_clone()).collect();
        let hooks =
            GradReadyHooks::register(&params, Box::new(move |i| lock(&hooked).on_ready(i)))?;
        self.overlap = Some(Overlap {
            state,
            _hooks: hooks,
        });
        Ok(())
    }

    /// Lets the next backward start the all-reduces (see
    /// [`GradientBuckets::overlap_with_backward`]; without it, or on one rank, this does nothing).
    /// [`GradientBuckets::all_reduce`] completes them and disarms.
    pub fn arm(&self, comm: &'static dyn Comm) {
        if let Some(overlap) = &self.overlap {
            if comm.size() > 1 {
                lock(&overlap.state).arm(comm);
            }
        }
    }

    /// Divides the summed buckets by the world size and returns the squared norm of the result
    /// (one pass per bucket, no temporary; it also carries any NaN or infinity).
    fn averaged_norm(&mut self, world: usize) -> Tensor {
        let _guard = tch::no_grad_guard();
        let device = self
            .buffers
            .first()
            .map_or(tch::Device::Cpu, |b| b.device());
        let mut sq_norm = Tensor::zeros([], (Kind::Double, device));
        for flat in &mut self.buffers {
            if world > 1 {
                let _ = flat.g_div_scalar_(world as f64);
            }
            sq_norm += flat.norm().to_kind(Kind::Double).square();
        }
        sq_norm
    }

    /// The error for step `step` whose averaged gradient was not finite, naming the parameters
    /// whose gradients hold a NaN or infinity.
    pub fn not_finite(&self, step: i64) -> Error {
        let bad: Vec<&str> = self
            .params
            .iter()
            .filter(|(_, p)| !bool::try_from(p.grad().isfinite().all()).unwrap_or(false))
            .map(|(n, _)| n.as_str())
            .collect();
        let place = match bad.len() {
            0 => "its norm overflows, or another rank contributed NaN or infinity".to_string(),
            n if n <= 5 => format!("NaN or infinity in {}", bad.join(", ")),
            n => format!(
                "NaN or infinity in {} and {} more",
                bad[..5].join(", "),
                n - 5
            ),
        };
        Error::Train(format!(
            "step {step}: the averaged {} gradient is not finite ({place}): training diverged and \
             stops here; nothing from this step is saved, and the last checkpoint (if any) is \
             kept for --resume (with a lower learning rate, say)",
            self.net
        ))
    }
}

impl GradientBuckets {
    /// How many buckets (so collectives) one averaging takes.
    pub fn count(&self) -> usize {
        self.ranges.len()
    }

    /// Whether [`GradientBuckets::overlap_with_backward`] is in effect.
    pub fn overlapping(&self) -> bool {
        self.overlap.is_some()
    }

    /// The all-reduce time accumulated since the last call, and resets it.
    pub fn take_comm_seconds(&mut self) -> f64 {
        std::mem::take(&mut self.comm_seconds)
    }
}

/// The hooks and the state they share with [`GradientBuckets::all_reduce`].
struct Overlap {
    state: Arc<Mutex<InFlight>>,
    _hooks: GradReadyHooks,
}

impl Overlap {
    /// Starts what backward has not, completes every collective in start order and disarms:
    /// `None` if nothing was armed, else the outcome and the seconds spent in collectives.
    fn finish(&self) -> Option<(Result<()>, f64)> {
        let mut s = lock(&self.state);
        let comm = s.comm.take()?.0;
        s.start_in_order(comm, true);
        let t0 = Instant::now();
        let mut outcome = s.error.take().map_or(Ok(()), Err);
        for started in std::mem::take(&mut s.started) {
            // Every started collective is completed, even after an error, so that none is
            // left pending on the ranks that did start it.
            let done = comm.finish(started);
            if outcome.is_ok() {
                outcome = done;
            }
        }
        Some((
            outcome,
            std::mem::take(&mut s.seconds) + t0.elapsed().as_secs_f64(),
        ))
    }
}

/// The communicator of an armed backward.
struct CommRef(&'static dyn Comm);

// SAFETY: a `CommRef` is used only while the thread that armed it is blocked in `backward`
// (libtorch's autograd thread for CUDA runs the hooks then) or by that thread itself, so the
// communicator is never used by two threads at once.
unsafe impl Send for CommRef {}

/// One backward's progress through the buckets.
struct InFlight {
    /// `Some` from `arm` to `Overlap::finish`: hooks firing at other times do nothing.
    comm: Option<CommRef>,
    names: Vec<String>,
    /// Parameters per bucket.
    sizes: Vec<usize>,
    bucket_of: Vec<usize>,
    /// Per bucket, the parameters whose gradient backward has not completed yet.
    missing: Vec<usize>,
    arrived: Vec<bool>,
    buffers: Vec<Tensor>,
    /// In start order: the last bucket first.
    started: Vec<Started>,
    error: Option<Error>,
    seconds: f64,
}

impl InFlight {
    fn arm(&mut self, comm: &'static dyn Comm) {
        self.comm = Some(CommRef(comm));
        self.missing = self.sizes.clone();
        self.arrived = vec![false; self.names.len()];
        self.started.clear();
        self.error = None;
    }

    fn on_ready(&mut self, param: usize) {
        let Some(comm) = self.comm.as_ref().map(|c| c.0) else {
            return;
        };
        let bucket = self.bucket_of[param];
        if std::mem::replace(&mut self.arrived[param], true) {
            let started = self.next_bucket().is_none_or(|next| bucket > next);
            if started && self.error.is_none() {
                self.error = Some(Error::Dist(format!(
                    "{}'s gradient changed after its all-reduce had started (backward \
                     accumulated it twice); set dist.overlap = false",
                    self.names[param]
                )));
            }
            return;
        }
        self.missing[bucket] -= 1;
        // Every gradient that lands moves the collectives in flight on (see `Pending`).
        let t0 = Instant::now();
        for started in &mut self.started {
            if let Err(e) = started.progress() {
                self.error.get_or_insert(e);
            }
        }
        self.seconds += t0.elapsed().as_secs_f64();
        self.start_in_order(comm, false);
    }

    /// The bucket whose all-reduce starts next, if any is left: buckets start in a fixed order,
    /// the last first, so that every rank issues the same collectives in the same order even if
    /// its backward completes them in another.
    fn next_bucket(&self) -> Option<usize> {
        (self.sizes.len() - self.started.len()).checked_sub(1)
    }

    /// Starts the next buckets while their gradients are complete, or all of them (`all`).
    fn start_in_order(&mut self, comm: &dyn Comm, all: bool) {
        while let Some(next) = self.next_bucket().filter(|_| self.error.is_none()) {
            if !all && self.missing[next] > 0 {
                break;
            }
            self.start(comm, next);
        }
    }

    fn start(&mut self, comm: &dyn Comm, bucket: usize) {
        let t0 = Instant::now();
        match comm.start_all_reduce_sum(&mut self.buffers[bucket]) {
            Ok(started) => self.started.push(started),
            Err(e) => self.error = Some(e),
        }
        self.seconds += t0.elapsed().as_secs_f64();
    }
}

/// A poisoned lock means a hook panicked, which aborts the process: the state is never seen
/// half-updated.
fn lock(state: &Mutex<InFlight>) -> MutexGuard<'_, InFlight> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;
    use tch::Device;

    /// Two identical ranks, as far as the buckets can tell: a sum doubles the tensor. Every
    /// start and finish is logged (with the element count), next to the test's own markers.
    struct Recorder(Mutex<Vec<String>>);

    impl Recorder {
        fn note(&self, what: String) {
            self.0.lock().unwrap().push(what);
        }
    }

    impl Comm for Recorder {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
            self.note(format!("sum {}", t.numel()));
            let _ = t.g_mul_scalar_(2.0);
            Ok(())
        }
        fn start_all_reduce_sum(&self, t: &mut Tensor) -> Result<Started> {
            let n = t.numel();
            self.note(format!("start {n}"));
            let _ = t.g_mul_scalar_(2.0);
            Ok(Started::done(n))
        }
        fn finish(&self, started: Started) -> Result<()> {
            self.note(format!("finish {}", started.elements()));
            started.wait()
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
        fn gather_bytes(&self, _bytes: &[u8], _root: usize) -> Result<Option<Vec<Vec<u8>>>> {
            Ok(None)
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
    }

    /// Leaf parameters of `sizes` elements whose gradients are views into one flat tensor (the
    /// layout the trainer's optimiser gives them).
    fn flat_params(sizes: &[i64]) -> (Vec<(String, Tensor)>, Tensor) {
        let params: Vec<(String, Tensor)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let p = Tensor::arange(n, (Kind::Float, Device::Cpu)) + i as f64;
                (format!("p{i}"), p.set_requires_grad(true))
            })
            .collect();
        let touch: Tensor = params.iter().map(|(_, p)| p.sum(Kind::Float) * 0.0).sum();
        touch.backward();
        let flat = Tensor::zeros([sizes.iter().sum::<i64>()], (Kind::Float, Device::Cpu));
        let mut offset = 0;
        tch::no_grad(|| {
            for ((_, p), &n) in params.iter().zip(sizes) {
                p.grad().set_data(&flat.narrow(0, offset, n));
                offset += n;
            }
        });
        (params, flat)
    }

    fn backward_with(params: &[(String, Tensor)], used: &[usize], flat: &Tensor) {
        let _ = tch::no_grad(|| flat.shallow_clone().zero_());
        let loss: Tensor = used
            .iter()
            .map(|&i| (&params[i].1 * &params[i].1).sum(Kind::Float) * (i + 1) as f64)
            .sum();
        loss.backward();
    }

    #[test]
    fn overlapped_buckets_start_during_backward_in_a_fixed_order_and_average_the_same() {
        let comm: &'static Recorder = Box::leak(Box::new(Recorder(Mutex::new(Vec::new()))));
        let (params, flat) = flat_params(&[4, 6, 5]);
        // One parameter per bucket.
        let mut buckets = GradientBuckets::over_flat("N", &params, &flat, 1).unwrap();
        buckets.overlap_with_backward().unwrap();

        backward_with(&params, &[0, 1, 2], &flat);
        let expected = flat.copy();
        comm.0.lock().unwrap().clear();
        buckets.arm(comm);
        backward_with(&params, &[0, 1, 2], &flat);
        comm.note("backward returned".into());
        let sq = buckets.all_reduce(comm).unwrap();
        assert_eq!(
            *comm.0.lock().unwrap(),
            [
                "start 5",
                "start 6",
                "start 4",
                "backward returned",
                "finish 5",
                "finish 6",
                "finish 4"
            ]
        );
        assert!(
            flat.equal(&expected),
            "the average of two equal ranks changed"
        );
        // The norm is the bucket norms' (fp32, as the non-overlapped path takes them) in
        // bucket order.
        let norm2: f64 = [(0, 4), (4, 6), (10, 5)]
            .iter()
            .map(|&(o, n)| expected.narrow(0, o, n).norm().double_value(&[]).powi(2))
            .sum();
        assert_eq!(f64::try_from(sq).unwrap(), norm2);

        // p1 gets no gradient: its bucket starts only at the end, and bucket 0 waits for it.
        comm.0.lock().unwrap().clear();
        buckets.arm(comm);
        backward_with(&params, &[0, 2], &flat);
        comm.note("backward returned".into());
        let _ = buckets.all_reduce(comm).unwrap();
        let log = comm.0.lock().unwrap().clone();
        assert_eq!(
            log[..4],
            ["start 5", "backward returned", "start 6", "start 4"]
        );

        // Not armed: the hooks do nothing, and all_reduce averages the usual way.
        comm.0.lock().unwrap().clear();
        backward_with(&params, &[0, 1, 2], &flat);
        let _ = buckets.all_reduce(comm).unwrap();
        assert_eq!(*comm.0.lock().unwrap(), ["sum 4", "sum 6", "sum 5"]);
        assert!(flat.equal(&expected));
    }

    #[test]
    fn buckets_respect_the_limit_and_cover_everything() {
        let b = plan_buckets(&[10, 10, 10, 50, 5], 25);
        assert_eq!(b, vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(plan_buckets(&[10, 10, 10], 0), vec![0..3]);
        assert!(plan_buckets(&[], 10).is_empty());
    }
}
