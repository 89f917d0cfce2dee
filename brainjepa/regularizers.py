"""Anti-collapse regularizers for JEPA embeddings (pure PyTorch).

* :func:`sigreg_loss` -- SIGReg, *Sketched Isotropic Gaussian Regularization* from LeJEPA (Balestriero & LeCun,
  arXiv 2511.08544). The (N, D) embeddings are projected onto random unit directions and each 1-D projection is
  scored with the Epps-Pulley normality statistic against N(0, 1): N times the integral over t in [-T, T] of
  ``|ecf(t) - exp(-t^2/2)|^2 * exp(-t^2/2)``, where ``ecf(t) = mean_n exp(i t x_n)`` is the empirical characteristic
  function (trapezoid rule). By Cramer-Wold, driving every slice to N(0, 1) drives the embeddings towards an isotropic
  standard Gaussian, which excludes collapse (constant rows), dimensional collapse (low rank) and wrong scale.
* :func:`vicreg_loss` -- the variance + covariance terms of VICReg (Bardes, Ponce & LeCun, arXiv 2105.04906) as used
  by C-JEPA (arXiv 2410.19560): a hinge keeping every dimension's std at or above a target, and the sum of squared
  off-diagonal covariances divided by D, which decorrelates the dimensions.

Under ``torch.distributed`` (initialized, world size > 1) both losses use GLOBAL-batch statistics: the per-rank sums
they need are all-reduced with the autograd-aware ``torch.distributed.nn.functional.all_reduce``, so the loss value
equals the single-process value on the concatenated batch. Every rank must call the loss (the same number of times,
with the same D). Because the backward of that all-reduce sums the incoming gradients over ranks, and every rank
back-propagates the same global loss, the gradient each rank receives for its own rows is ``world_size`` times the
single-process gradient of those rows; DDP's gradient averaging (division by ``world_size``) then yields exactly the
single-process parameter gradient of the global loss.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist

__all__ = ["sigreg_loss", "vicreg_loss"]

SIGREG_T_MAX = 3.0
"""Default half-width T of the Epps-Pulley integration interval [-T, T]."""


def _distributed_world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _global_sum(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Sum each tensor over all ranks (autograd-aware, one collective); identity outside a >1-rank process group.

    The tensors are flattened into one buffer so a single all-reduce serves them all; the backward of the collective
    all-reduces the gradients, so gradients reach every rank's inputs.
    """
    if _distributed_world_size() <= 1:
        return tensors
    from torch.distributed.nn.functional import all_reduce

    flat = torch.cat([t.reshape(-1) for t in tensors])
    with warnings.catch_warnings():
        # torch marks the autograd-aware functional collectives deprecated (FutureWarning) but offers no
        # differentiable replacement for all_reduce; silence that one warning only.
        warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional", category=FutureWarning)
        flat = all_reduce(flat, op=dist.ReduceOp.SUM)
    out = []
    offset = 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].reshape(t.shape))
        offset += t.numel()
    return tuple(out)


def _as_float32_rows(x: torch.Tensor) -> torch.Tensor:
    if x.ndim < 2:
        raise ValueError(f"expected embeddings of shape (N, D) (or (..., D)), got {tuple(x.shape)}")
    return x.reshape(-1, x.shape[-1]).float()


def _epps_pulley_nodes(n_points: int, t_max: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes t >= 0 and weights w such that sum_k w_k f(t_k) is the trapezoid rule for the integral of
    ``f(t) * exp(-t^2/2)`` over [-t_max, t_max] on ``n_points`` equispaced nodes, for an EVEN integrand f.

    The squared ECF distance is even in t (the ECF of real data satisfies ecf(-t) = conj(ecf(t))), so the negative
    half of the grid is folded onto the positive half, halving the work.
    """
    if n_points < 2:
        raise ValueError("n_points must be >= 2")
    t = torch.linspace(-t_max, t_max, n_points, dtype=torch.float32, device=device)
    w = torch.full_like(t, 2.0 * t_max / (n_points - 1))
    w[0] = w[-1] = w[0] / 2
    w = w * torch.exp(-0.5 * t.square())
    half = n_points // 2
    nodes = t[half:]
    weights = w[half:] + w[: n_points - half].flip(0)
    if n_points % 2 == 1:
        weights[0] = w[half]  # t = 0 has no mirror image
    return nodes, weights


def sigreg_loss(
    x: torch.Tensor,
    n_slices: int = 256,
    n_points: int = 17,
    generator: torch.Generator | None = None,
    *,
    t_max: float = SIGREG_T_MAX,
) -> torch.Tensor:
    """SIGReg: mean over ``n_slices`` random unit directions of the Epps-Pulley statistic of the projected embeddings.

    Args:
        x: embeddings, (N, D) (leading dimensions beyond one are flattened into rows). Computed in float32, also
            under autocast.
        n_slices: number of random directions.
        n_points: trapezoid nodes on [-t_max, t_max].
        generator: source of the directions (a generator on ``x.device``). Under DDP the directions must be the
            same on every rank: pass a generator seeded identically on all ranks, e.g. seeded from ``(seed, step)``
            (``torch.Generator(device).manual_seed(seed * 1_000_003 + step)``), fresh every step. ``None`` uses the
            global RNG, which is only safe if it is in the same state on every rank.
        t_max: half-width T of the integration interval.

    Returns:
        A float32 scalar: ``N * integral |ecf - exp(-t^2/2)|^2 exp(-t^2/2) dt`` averaged over slices, with N the
        global batch size. About 0 (O(1), not growing with N) for standard Gaussian embeddings, O(N) otherwise.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        rows = _as_float32_rows(x)
        directions = torch.randn(rows.shape[1], n_slices, generator=generator, device=rows.device, dtype=torch.float32)
        directions = directions / directions.norm(dim=0, keepdim=True)
        nodes, weights = _epps_pulley_nodes(n_points, t_max, rows.device)
        phase = (rows @ directions).unsqueeze(-1) * nodes  # (N, S, P)
        count = torch.tensor(float(rows.shape[0]), device=rows.device)
        cos_sum, sin_sum, count = _global_sum(phase.cos().sum(0), phase.sin().sum(0), count)
        target = torch.exp(-0.5 * nodes.square())
        sq_dist = (cos_sum / count - target).square() + (sin_sum / count).square()  # (S, P)
        statistic = count * (sq_dist * weights).sum(-1)  # (S,)
        return statistic.mean()


def vicreg_loss(
    x: torch.Tensor,
    std_target: float = 1.0,
    variance_weight: float = 1.0,
    covariance_weight: float = 1.0,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, float]]:
    """VICReg variance + covariance regularizer on (N, D) embeddings (global-batch statistics under DDP).

    variance = mean_d relu(std_target - sqrt(var_d + eps)) with the unbiased variance; covariance = sum of squared
    off-diagonal entries of the (unbiased) covariance matrix / D. Computed in float32, also under autocast; the mean
    is reduced first and the centred cross-products second (two collectives under DDP) for numerical accuracy.

    Returns:
        ``(variance_weight * variance + covariance_weight * covariance, {"variance": ..., "covariance": ...})``,
        the dict holding the unweighted terms as Python floats.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        rows = _as_float32_rows(x)
        dim = rows.shape[1]
        count = torch.tensor(float(rows.shape[0]), device=rows.device)
        total, count = _global_sum(rows.sum(0), count)
        if count.item() < 2:
            raise ValueError("vicreg_loss needs at least two rows in the (global) batch")
        centred = rows - total / count
        (scatter,) = _global_sum(centred.T @ centred)
        cov = scatter / (count - 1)
        std = torch.sqrt(torch.diagonal(cov) + eps)
        variance = torch.relu(std_target - std).mean()
        off_diagonal = cov - torch.diag_embed(torch.diagonal(cov))
        covariance = off_diagonal.square().sum() / dim
        loss = variance_weight * variance + covariance_weight * covariance
        return loss, {"variance": float(variance.detach()), "covariance": float(covariance.detach())}
