"""Recording results: figures here; MLflow logging imports mlflow lazily."""
