"""Ray job entry point for cohort ingestion.

    brainjepa submit ingest --address http://HEAD:8265 s3://bucket/bids --atlas s3://bucket/atlas.nii.gz \\
        --labels s3://bucket/labels.tsv --out s3://bucket/ukb --workers 64

Runs inside the cluster (RAY_ADDRESS is set by the job), exactly as `brainjepa ingest`: chunks of scans run on
a Ray Data actor pool spread over the cluster's CPU nodes. Exit status 0 all ingested, 3 some inputs
quarantined, 2 error.
"""

import sys

from brainjepa_platform.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
