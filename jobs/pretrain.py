"""Ray job entry point for pretraining.

    ray job submit --address http://HEAD:8265 --runtime-env-json '{"working_dir": "local:///home/ray/brainjepa"}' -- \\
        python jobs/pretrain.py --config configs/pretrain/base.yaml data.dataset=s3://bucket/ukb

Runs inside the cluster (RAY_ADDRESS is set by the job), exactly as `brainjepa pretrain`.
"""

import sys

from brainjepa_platform.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
