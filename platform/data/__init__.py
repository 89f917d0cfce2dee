"""Data stage: input discovery, ROI extraction, ingestion into Parquet shards + manifest, synthetic cohorts,
reading shards back with Ray Data, group FC and gradient artifacts."""
