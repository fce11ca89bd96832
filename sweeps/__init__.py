"""sweeps: Ray Tune trainables, Optuna search, MLflow records and the `gitsweep` CLI."""
