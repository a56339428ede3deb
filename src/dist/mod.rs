//! Ranks, devices and the collectives that keep replicas identical.
pub mod buckets;
pub mod comm;
pub mod device;
pub mod nccl;
pub mod sync;

pub use comm::{Comm, LocalComm};
