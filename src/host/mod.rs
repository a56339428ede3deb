//! The host process: its memory allocator, the CPU threads libtorch uses, and autocast regions.
pub mod alloc;
pub mod autocast;
pub mod cpu_threads;
