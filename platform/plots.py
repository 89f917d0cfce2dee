"""Pictures: masks on the ROI x time grid, training curves.

Figures are drawn on their own ``Figure`` with an Agg canvas, not through ``pyplot``: importing this module
and drawing leave matplotlib's backend and pyplot's figures as the caller has them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from brainjepa.masks import MaskBatch

MASK_COLOURS = ["#f2f2f2", "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]
MASK_LABELS = [
    "not used",
    "context (observation)",
    "cross-ROI target",
    "cross-time target",
    "double-cross target",
    "in-block target",
]


def _figure(**kwargs: object) -> Figure:
    """A figure of its own (Agg canvas), outside pyplot's global state."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def mask_grid(masks: MaskBatch, sample: int, n_rois: int, n_time_patches: int) -> np.ndarray:
    """(R, P) codes: 0 unused, 1 context, 2 cross-ROI, 3 cross-time, 4 double-cross, 5 in-block."""
    grid = np.zeros(n_rois * n_time_patches, dtype=np.int64)
    grid[masks.context[sample]] = 1
    start = 0
    for code, size in enumerate(masks.region_sizes, start=2):
        grid[masks.target[sample, start : start + size]] = code
        start += size
    return grid.reshape(n_rois, n_time_patches)


def plot_masks(masks: MaskBatch, n_rois: int, n_time_patches: int, path: str | Path, n_samples: int = 4) -> Path:
    """Draw the first ``n_samples`` samples' masks side by side (ROIs down, time patches across)."""
    n = min(n_samples, masks.context.shape[0])
    fig = _figure(figsize=(2.2 * n + 1.5, 5))
    axes = fig.subplots(1, n, squeeze=False)
    cmap = ListedColormap(MASK_COLOURS)
    for i, ax in enumerate(axes[0]):
        ax.imshow(
            mask_grid(masks, i, n_rois, n_time_patches),
            cmap=cmap,
            vmin=0,
            vmax=len(MASK_COLOURS) - 1,
            aspect="auto",
            interpolation="nearest",
        )
        ax.set_title(f"sample {i}")
        ax.set_xlabel("time patch")
        if i == 0:
            ax.set_ylabel("ROI")
    handles = [Patch(color=c, label=label) for c, label in zip(MASK_COLOURS, MASK_LABELS)]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle(f"Spatiotemporal masks on the {n_rois} ROI x {n_time_patches} time-patch grid")
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    return _save(fig, path)


def plot_training_curves(history: list[dict[str, float]], path: str | Path) -> Path:
    """Loss against the position-only floor, context reliance and collapse monitors, per optimizer step.

    Monitors computed only on some steps are drawn at those steps; a series never logged is left out.
    """
    panels = [
        ("JEPA loss vs position-only floor", [("loss", "loss"), ("floor", "position-only floor")]),
        ("context reliance (0: ignores the data)", [("context_reliance", "swapped-context loss - loss")]),
        ("effective rank", [("target_rank", "targets"), ("context_rank", "pooled context")]),
        ("std per dimension", [("target_std", "targets"), ("context_std", "pooled context")]),
    ]
    fig = _figure(figsize=(4 * len(panels), 3.2))
    axes = fig.subplots(1, len(panels))
    for ax, (title, series) in zip(axes, panels):
        for key, label in series:
            points = [(h["step"], h[key]) for h in history if key in h and np.isfinite(h[key])]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="." if len(points) < 50 else None, label=label)
        if key == "context_reliance":
            ax.axhline(0.0, color="grey", lw=0.8)
        if len(series) > 1:
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step")
    fig.tight_layout()
    return _save(fig, path)


def plot_gradients(gradients: np.ndarray, eigenvalues: np.ndarray, roi_labels: list[str], path: str | Path) -> Path:
    """Gradient 1 vs gradient 2 (coloured by network when the labels name one) and the scree plot."""
    from brainjepa.gradients import network_names

    fig = _figure(figsize=(11, 4.6))
    scatter, scree = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
    networks = network_names(roi_labels)
    x = gradients[:, 0]
    y = gradients[:, 1] if gradients.shape[1] > 1 else np.arange(len(x), dtype=float)
    if networks is None:
        scatter.scatter(x, y, s=14, color="#4c72b0", alpha=0.8)
    else:
        names = sorted(set(networks))
        cmap = matplotlib.colormaps["tab20" if len(names) > 10 else "tab10"]
        for i, name in enumerate(names):
            mine = np.array([n == name for n in networks])
            scatter.scatter(x[mine], y[mine], s=14, color=cmap(i % cmap.N), label=name)
        scatter.legend(fontsize=7, markerscale=1.3, loc="best", ncol=2 if len(names) > 8 else 1)
    scatter.set_xlabel("gradient 1")
    scatter.set_ylabel("gradient 2" if gradients.shape[1] > 1 else "ROI index")
    scatter.set_title(f"{gradients.shape[0]} ROIs in gradient space")
    ks = np.arange(1, len(eigenvalues) + 1)
    scree.plot(ks, eigenvalues, "o-", ms=4)
    scree.set_xlabel("component")
    scree.set_ylabel("eigenvalue  lambda / (1 - lambda)")
    scree.set_title("scree")
    fig.tight_layout()
    return _save(fig, path)


def plot_evaluation(last: dict, task: str, target: str, path: str | Path) -> Path:
    """Test-set predictions of each feature set (one seed): ROC curves for a binary target, predicted vs
    true for a regression target, per-class recall bars otherwise."""
    from sklearn.metrics import recall_score, roc_curve

    fig = _figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    for name, result in last.items():
        if task == "regression":
            label = f"{name} (r={result.metrics['pearson_r']:.2f})"
            ax.scatter(result.y_true, result.y_pred, s=12, alpha=0.7, label=label)
        elif result.classes is not None and len(result.classes) == 2:
            fpr, tpr, _ = roc_curve(result.y_true == result.classes[1], result.y_score[:, 1])
            ax.plot(fpr, tpr, label=f"{name} (AUROC {result.metrics['auroc']:.2f})")
        else:
            recall = recall_score(result.y_true, result.y_pred, labels=result.classes, average=None, zero_division=0)
            ax.plot(np.arange(len(recall)), recall, marker="o", label=name)
    if task == "regression":
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set(xlabel=f"true {target}", ylabel=f"predicted {target}")
    elif all(r.classes is not None and len(r.classes) == 2 for r in last.values()):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set(xlabel="false positive rate", ylabel="true positive rate")
    else:
        ax.set(xlabel="class", ylabel="recall")
    ax.set_title(f"{target}: test set")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_fingerprint(summary: dict[str, dict[str, tuple[float, float]]], n_subjects: int, path: str | Path) -> Path:
    """Identification accuracy and I_diff of each feature set (``<family> <features>``) as bars (mean +- sd: the
    random draws' spread), one colour per family, chance marked on the accuracy panel."""
    fig = _figure(figsize=(8, 3.8))
    names = list(summary)
    for ax, metric in zip(fig.subplots(1, 2), ("identification", "i_diff")):
        means = [summary[n][metric][0] for n in names]
        sds = [summary[n][metric][1] for n in names]
        colours = [MASK_COLOURS[1 + sorted({n.split()[0] for n in names}).index(n.split()[0]) % 5] for n in names]
        ax.barh(np.arange(len(names)), means, xerr=sds, color=colours)  # one colour per encoder family
        ax.set_yticks(np.arange(len(names)), names if metric == "identification" else [""] * len(names), fontsize=8)
        ax.invert_yaxis()
        if metric == "identification":
            ax.axvline(1 / n_subjects, color="grey", lw=0.8, ls="--", label=f"chance (1/{n_subjects})")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_title("identification accuracy" if metric == "identification" else "differential identifiability")
    fig.tight_layout()
    return _save(fig, path)
