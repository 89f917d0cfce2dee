"""Brain-JEPA model library: pure PyTorch + numpy/scipy (no Ray, MLflow or object-store clients)."""

__version__ = "0.1.0"
