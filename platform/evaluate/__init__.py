"""Evaluate stage: embeddings of a registered encoder, linear probes and metrics, fine-tuning, the
``brainjepa evaluate`` run and the scikit-learn interface."""
