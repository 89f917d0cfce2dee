"""Wall time of `diffusion_map` (affinity + exact dense eigensolver) on a synthetic group FC.

    python benchmarks/gradients_timing.py --rois 1000 --components 30 --repeats 7
    python benchmarks/gradients_timing.py --rois 1000 --no-thread-limit   # BLAS at its default thread count

Prints min / median / max over the repeats: the median is the number to quote, the max shows what
a loaded machine does to it.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

from brainjepa import gradients
from brainjepa.synthetic import synthetic_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rois", type=int, default=1000)
    parser.add_argument("--components", type=int, default=30)
    parser.add_argument("--kernel", default="normalized_angle", choices=list(gradients.KERNELS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-thread-limit", action="store_true", help="leave BLAS at its default thread count")
    args = parser.parse_args()
    if args.no_thread_limit:
        gradients._one_blas_thread = contextlib.nullcontext
    cohort = synthetic_cohort(4, args.rois, n_frames=300, n_networks=17, seed=0)
    fc = gradients.group_fc(cohort.series)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = gradients.diffusion_map(fc, args.components, kernel=args.kernel)
        times.append(time.perf_counter() - t0)
    assert result.gradients.shape == (args.rois, args.components)
    threads = "default BLAS threads" if args.no_thread_limit else "1 BLAS thread"
    print(
        f"diffusion_map R={args.rois} m={args.components} {args.kernel} ({threads}, {args.repeats} runs): "
        f"min {min(times):.3f}s  median {np.median(times):.3f}s  max {max(times):.3f}s"
    )


if __name__ == "__main__":
    main()
