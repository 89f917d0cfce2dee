"""Ray job entry point for a Ray Tune sweep.

    brainjepa submit sweep --address http://HEAD:8265 --config configs/sweep/masking.yaml ...
    ray job submit --address http://HEAD:8265 --runtime-env-json '{"working_dir": "local:///home/ray/brainjepa"}' -- \\
        python jobs/sweep.py --config configs/sweep/masking.yaml pretrain.data.dataset=s3://bucket/ukb \\
        storage_path=s3://bucket/sweeps

Runs inside the cluster (RAY_ADDRESS is set by the job), exactly as `brainjepa sweep`; submitting the
same command again resumes an interrupted sweep.
"""

import sys

from brainjepa_platform.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
