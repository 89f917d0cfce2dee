"""Connecting to Ray (a local 127.0.0.1 cluster or ``RAY_ADDRESS``) and submitting jobs to a cluster."""
