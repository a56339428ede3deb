//! Experiments across runs: sweeps of a grid of configs over seeds (here or as a Slurm job
//! array), the comparison of their arms, and the scaling model fitted to all-reduce benchmarks.
pub mod comparison;
pub mod curves_plot;
pub mod grid;
pub mod job_array;
pub mod local;
pub mod plan;
pub mod run_results;
pub mod scaling;
pub mod scaling_report;
pub mod welch;
