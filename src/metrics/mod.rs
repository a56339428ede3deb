//! Evaluation metrics: FID and IS, and the feature networks behind them.
