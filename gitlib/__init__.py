"""gitlib: the library behind gitsweep (data, models, training, metrics, tracking).

No module here imports ray or mlflow at module level; tracking imports mlflow lazily.
"""

__version__ = "0.1.0"
