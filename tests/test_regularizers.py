"""Anti-collapse regularizers: SIGReg (LeJEPA) and VICReg variance/covariance, single process and under DDP."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from brainjepa.regularizers import SIGREG_T_MAX, sigreg_loss, vicreg_loss

# Measured: over 40 seeds, SIGReg on N(0, I) samples (N=2048, D=64, 256 slices) had mean 1.05 and max 1.47 -- the
# expectation is the integral of (1 - exp(-t^2)) exp(-t^2/2) over [-3, 3], about 1.06, independent of N. The failure
# modes below measured 180 (rank 2) to 1000 (collapsed); they grow like N.
GAUSSIAN_MAX = 2.5


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=_gen(seed))


# ------------------------------------------------------------------------------------------------ SIGReg


def test_sigreg_small_on_standard_gaussian_large_on_collapse() -> None:
    n, d = 2048, 64
    gauss = sigreg_loss(_gaussian(n, d, 1), generator=_gen(0)).item()
    assert 0.0 <= gauss < GAUSSIAN_MAX

    noise = 1e-3 * _gaussian(n, d, 2)
    collapsed = 0.3 + noise  # every row (nearly) the same vector
    q, _ = torch.linalg.qr(_gaussian(d, 2, 3))
    low_rank = _gaussian(n, 2, 4) @ q.T * (d / 2) ** 0.5  # rank 2, per-dimension variance ~1 like the Gaussian
    assert abs(low_rank.var(0).mean().item() - 1.0) < 0.1
    bad = {
        "collapsed": collapsed,
        "collapsed_at_zero": noise,
        "rank2": low_rank,
        "std0.1": 0.1 * _gaussian(n, d, 1),
        "std3": 3.0 * _gaussian(n, d, 1),
    }
    for name, x in bad.items():
        value = sigreg_loss(x, generator=_gen(0)).item()
        assert value > 100 * gauss, (name, value, gauss)


def test_sigreg_gaussian_value_does_not_grow_with_batch_but_collapse_does() -> None:
    small = sigreg_loss(_gaussian(256, 16, 5), n_slices=64, generator=_gen(0)).item()
    large = sigreg_loss(_gaussian(4096, 16, 5), n_slices=64, generator=_gen(0)).item()
    assert small < GAUSSIAN_MAX and large < GAUSSIAN_MAX
    c_small = sigreg_loss(0.1 * _gaussian(256, 16, 5), n_slices=64, generator=_gen(0)).item()
    c_large = sigreg_loss(0.1 * _gaussian(4096, 16, 5), n_slices=64, generator=_gen(0)).item()
    assert c_large / c_small == pytest.approx(16.0, rel=0.05)


def _epps_pulley_numpy(values: np.ndarray, t: float) -> float:
    """Integrand N * |ecf(t) - exp(-t^2/2)|^2 * exp(-t^2/2), straight from the definition, in float64."""
    ecf = np.mean(np.exp(1j * t * values))
    gauss = np.exp(-0.5 * t * t)
    return float(len(values) * abs(ecf - gauss) ** 2 * gauss)


@pytest.mark.parametrize("loc,scale", [(0.0, 1.0), (0.4, 1.3), (0.0, 0.5)])
def test_epps_pulley_matches_independent_integral(loc: float, scale: float) -> None:
    rng = np.random.default_rng(11)
    values = (loc + scale * rng.standard_normal(300)).astype(np.float32)
    x = torch.from_numpy(values)[:, None]  # D = 1: the single random unit direction is +-1, the statistic is even
    values64 = values.astype(np.float64)

    from scipy.integrate import quad  # imported here: the DDP test's spawned workers import this module

    reference, err = quad(lambda t: _epps_pulley_numpy(values64, t), -SIGREG_T_MAX, SIGREG_T_MAX, limit=200)
    assert err < 1e-6 * max(reference, 1.0)
    fine = sigreg_loss(x, n_slices=1, n_points=4001, generator=_gen(0)).item()
    assert fine == pytest.approx(reference, rel=1e-4, abs=1e-4)

    # The default 17-node rule equals the plain trapezoid rule on the full symmetric grid (not just approximately).
    grid = np.linspace(-SIGREG_T_MAX, SIGREG_T_MAX, 17)
    trapezoid = np.trapezoid([_epps_pulley_numpy(values64, t) for t in grid], grid)
    coarse = sigreg_loss(x, n_slices=1, n_points=17, generator=_gen(0)).item()
    assert coarse == pytest.approx(trapezoid, rel=1e-4, abs=1e-5)


def test_sigreg_directions_come_from_the_generator() -> None:
    x = 1.5 * _gaussian(512, 32, 6) + 0.2
    a = sigreg_loss(x, n_slices=8, generator=_gen(3))
    b = sigreg_loss(x, n_slices=8, generator=_gen(3))
    c = sigreg_loss(x, n_slices=8, generator=_gen(4))
    assert a.item() == b.item()
    assert a.item() != c.item()


def test_losses_are_float32_under_autocast() -> None:
    x = 1.5 * _gaussian(256, 32, 7) + 0.1
    plain_s = sigreg_loss(x, n_slices=32, generator=_gen(0))
    plain_v, _ = vicreg_loss(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto_s = sigreg_loss(x, n_slices=32, generator=_gen(0))
        auto_v, _ = vicreg_loss(x)
        bf16_s = sigreg_loss(x.bfloat16(), n_slices=32, generator=_gen(0))
    assert auto_s.dtype == auto_v.dtype == bf16_s.dtype == torch.float32
    assert auto_s.item() == pytest.approx(plain_s.item(), rel=1e-6)
    assert auto_v.item() == pytest.approx(plain_v.item(), rel=1e-6)


def test_gradients_flow_and_descent_reduces_losses() -> None:
    x = (0.5 * _gaussian(128, 16, 8) + 0.3).requires_grad_()
    sigreg_loss(x, n_slices=32, generator=_gen(0)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    x.grad = None
    vicreg_loss(x)[0].backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0

    def descend(loss_fn, lr: float, spread: float) -> list[float]:
        x = (0.3 + spread * _gaussian(256, 16, 9)).requires_grad_()  # (nearly) collapsed
        opt = torch.optim.SGD([x], lr=lr)
        history = []
        for _ in range(5):
            loss = loss_fn(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(loss.item())
        return history

    s = descend(lambda x: sigreg_loss(x, n_slices=64, generator=_gen(0)), lr=1.0, spread=1e-3)
    assert s[-1] < 0.95 * s[0], s
    # The variance hinge's gradient per element is ~ (x - mean) / (N * D * std): tiny near collapse (at spread 1e-3
    # the eps-dominated std makes 5 steps at lr 0.1 move the loss by 1e-6), hence a wider start and a large lr.
    v = descend(lambda x: vicreg_loss(x)[0], lr=1000.0, spread=0.05)
    assert v[-1] < 0.5 * v[0], v


# ------------------------------------------------------------------------------------------------ VICReg


def _vicreg_numpy(x: np.ndarray, std_target: float = 1.0, eps: float = 1e-4) -> tuple[float, float]:
    x = x.astype(np.float64)
    cov = np.cov(x, rowvar=False)
    variance = np.mean(np.maximum(0.0, std_target - np.sqrt(np.var(x, axis=0, ddof=1) + eps)))
    covariance = (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) / x.shape[1]
    return float(variance), float(covariance)


def test_vicreg_matches_numpy_formula_and_weights() -> None:
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((300, 12)) @ rng.standard_normal((12, 12)) * 0.4 + 2.0).astype(np.float32)
    loss, terms = vicreg_loss(torch.from_numpy(x), std_target=1.2, variance_weight=25.0, covariance_weight=0.5)
    variance, covariance = _vicreg_numpy(x, std_target=1.2)
    assert variance > 0.01 and covariance > 0.1
    assert terms["variance"] == pytest.approx(variance, rel=1e-4)
    assert terms["covariance"] == pytest.approx(covariance, rel=1e-4)
    assert loss.item() == pytest.approx(25.0 * variance + 0.5 * covariance, rel=1e-4)


def test_vicreg_variance_term() -> None:
    wide = 2.0 * _gaussian(512, 16, 13)  # every dimension has std ~2 >= 1
    assert wide.std(0).min() > 1.5
    assert vicreg_loss(wide)[1]["variance"] == 0.0
    _, terms = vicreg_loss(0.3 + 1e-3 * _gaussian(512, 16, 14))
    assert terms["variance"] == pytest.approx(1.0 - (1e-6 + 1e-4) ** 0.5, abs=2e-3)


def test_vicreg_covariance_term() -> None:
    rng = np.random.default_rng(15)
    raw = rng.standard_normal((400, 16)) @ rng.standard_normal((16, 16))
    centred = raw - raw.mean(0)
    whitened = centred @ np.linalg.inv(np.linalg.cholesky(np.cov(centred, rowvar=False))).T  # sample cov = I
    _, terms = vicreg_loss(torch.from_numpy(whitened).float())
    assert terms["covariance"] < 1e-8
    assert terms["variance"] == pytest.approx(0.0, abs=1e-4)
    _, raw_terms = vicreg_loss(torch.from_numpy(raw).float())
    assert raw_terms["covariance"] > 10.0

    half = whitened[:, :8]
    duplicated = np.concatenate([half, half], axis=1)  # dims 8..15 copy dims 0..7: off-diagonal entries 1
    _, dup_terms = vicreg_loss(torch.from_numpy(duplicated).float())
    assert dup_terms["covariance"] == pytest.approx(_vicreg_numpy(duplicated)[1], rel=1e-4)
    assert dup_terms["covariance"] == pytest.approx(1.0, rel=1e-4)  # 16 unit entries / D = 16


# ------------------------------------------------------------------------------------------------ DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses_and_grads(x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("sigreg", "vicreg"):
        leaf = x.clone().requires_grad_()
        if name == "sigreg":
            loss = sigreg_loss(leaf, n_slices=16, n_points=17, generator=_gen(1234))
        else:
            loss = vicreg_loss(0.7 * leaf + 0.1, variance_weight=3.0, covariance_weight=0.5)[0]
        loss.backward()
        out[f"{name}_loss"] = loss.detach()
        out[f"{name}_grad"] = leaf.grad
    return out


def _ddp_worker(rank: int, world_size: int, port: int, full: np.ndarray, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        rows = np.array_split(full, world_size)[rank]
        torch.save(_losses_and_grads(torch.from_numpy(rows)), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ddp_global_batch_equals_single_process(tmp_path: Path) -> None:
    world_size = 2
    rng = np.random.default_rng(16)
    full = (rng.standard_normal((96, 8)) * 0.8 + 0.3).astype(np.float32)
    single = _losses_and_grads(torch.from_numpy(full))

    mp.spawn(_ddp_worker, args=(world_size, _free_port(), full, str(tmp_path)), nprocs=world_size, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    for name in ("sigreg", "vicreg"):
        for result in ranks:
            torch.testing.assert_close(result[f"{name}_loss"], single[f"{name}_loss"], atol=1e-5, rtol=0)
        gathered = torch.cat([result[f"{name}_grad"] for result in ranks])
        assert single[f"{name}_grad"].abs().max() > 1e-3
        # Every rank back-propagates the same global loss and the backward of the autograd all-reduce SUMS the
        # incoming gradients over ranks, so each rank's gradient for its own rows is world_size times the
        # single-process gradient (DDP's averaging of parameter gradients then divides the factor away).
        torch.testing.assert_close(gathered, world_size * single[f"{name}_grad"], atol=1e-5, rtol=1e-4)
