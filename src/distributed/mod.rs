//! Ranks, devices and the collectives that keep replicas identical.
pub mod abort;
pub mod agree;
pub mod backward_sum;
pub mod buckets;
pub mod comm;
pub mod cuda_driver;
pub mod cuda_stream;
pub mod device;
pub mod grad_ready;
pub mod job;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod nccl;
pub mod sync;
pub mod watchdog;
pub mod watched;
pub mod world;

pub use comm::{Comm, LocalComm};
