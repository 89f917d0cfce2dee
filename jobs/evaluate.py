"""Ray job entry point for downstream evaluation.

    ray job submit --address http://HEAD:8265 --runtime-env-json '{"working_dir": "local:///home/ray/brainjepa"}' -- \\
        python jobs/evaluate.py --data s3://bucket/cohort --target age

``--model`` defaults to ``models:/brainjepa-encoder-<atlas>-<n_rois>@current`` of the dataset's atlas.

Runs inside the cluster (RAY_ADDRESS is set by the job), exactly as `brainjepa evaluate`.
"""

import sys

from brainjepa_platform.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
