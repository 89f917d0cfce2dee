"""Train stage: the pretraining config, the streaming input pipeline, the Ray Train worker loop, checkpoints,
the run lock and the trainer (no MLflow registry: ``tracking.pretraining`` wraps a run in MLflow)."""
