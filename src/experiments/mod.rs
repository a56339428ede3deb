//! Experiments across runs: sweeps of a grid of configs over seeds (here or as a Slurm job
//! array), and the comparison of their arms.
pub mod comparison;
pub mod curves_plot;
pub mod grid;
pub mod job_array;
pub mod local;
pub mod plan;
pub mod run_results;
pub mod welch;
