"""What the driver records of a sweep: the trial index and kept results (callback), and MLflow (tracker,
mlflow_runs). Only the Ray driver writes here."""
