//! Monitoring output: TensorBoard event files.
