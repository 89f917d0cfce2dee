"""Diffusion-map gradients: structure recovery, determinism, alignment, the artifact and the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import special_ortho_group

from brainjepa.gradients import (
    GradientArtifact,
    GradientArtifactError,
    GradientParams,
    GradientProvenance,
    check_params,
    default_components,
    diffusion_map,
    gradient_artifact,
    group_fc,
    network_names,
    pearson_fc,
    procrustes_align,
)
from brainjepa.synthetic import synthetic_cohort
from brainjepa_platform.data.gradient_artifacts import GradientsRequest, load_fc_matrix, plan_gradients, read_roi_labels
from tests.manifests import small_manifest, write_manifest

NETWORKS7 = ["Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default"]


@pytest.fixture(scope="module")
def cohort_fc() -> tuple[np.ndarray, np.ndarray]:
    """Group FC of a 7-network, 70-ROI synthetic cohort and each ROI's network."""
    cohort = synthetic_cohort(5, 70, n_frames=240, n_networks=7, noise=0.5, seed=3)
    return group_fc(cohort.series), cohort.network


def schaefer_labels(network: np.ndarray) -> list[str]:
    return [f"7Networks_{'LH' if i % 2 else 'RH'}_{NETWORKS7[k]}_{i}" for i, k in enumerate(network)]


def test_group_fc_is_fisher_z_average() -> None:
    cohort = synthetic_cohort(3, 12, n_frames=80, seed=0)
    z = [np.arctanh(np.clip(pearson_fc(s), -0.999999, 0.999999)) for s in cohort.series]
    expected = np.tanh(np.mean(z, axis=0))
    np.testing.assert_allclose(group_fc(cohort.series), expected, atol=1e-12)
    np.testing.assert_allclose(pearson_fc(cohort.series[0]), np.corrcoef(cohort.series[0]), atol=1e-10)


def test_first_gradient_separates_networks() -> None:
    cohort = synthetic_cohort(6, 60, n_frames=300, n_networks=3, noise=0.5, seed=1)
    result = diffusion_map(group_fc(cohort.series), n_components=3)
    # the first two gradients place ROIs by network: nearly all their variance is between networks
    for g in result.gradients[:, :2].T:
        means = np.array([g[cohort.network == k].mean() for k in range(3)])
        between = np.sum([(cohort.network == k).sum() * (means[k] - g.mean()) ** 2 for k in range(3)])
        assert between / np.sum((g - g.mean()) ** 2) > 0.9
    assert np.all(np.diff(result.eigenvalues) <= 1e-12)  # ordered by eigenvalue


def test_deterministic_and_permutation_invariant() -> None:
    fc = group_fc(synthetic_cohort(4, 40, n_frames=200, seed=2).series)
    first, again = diffusion_map(fc, 5), diffusion_map(fc, 5)
    np.testing.assert_array_equal(first.gradients, again.gradients)
    perm = np.random.default_rng(0).permutation(40)
    permuted = diffusion_map(fc[np.ix_(perm, perm)], 5)
    np.testing.assert_allclose(permuted.gradients, first.gradients[perm], atol=1e-8)
    np.testing.assert_allclose(permuted.eigenvalues, first.eigenvalues, rtol=1e-8)


def test_input_checks() -> None:
    fc = group_fc(synthetic_cohort(2, 20, n_frames=100, seed=4).series)
    with pytest.raises(ValueError, match="square"):
        diffusion_map(fc[:, :10])
    bad = fc.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        diffusion_map(bad)
    with pytest.raises(ValueError, match="sparsity"):
        diffusion_map(fc, 3, sparsity=0.99)  # keeps int(20 * 0.01) = 0 entries per row
    blocks = np.kron(np.eye(2), np.ones((10, 10)))  # two unrelated halves: the cosine graph falls apart
    with pytest.raises(ValueError, match="disconnected"):
        diffusion_map(blocks + 0.01 * np.eye(20), 3, kernel="cosine", sparsity=0.5)


def test_thousand_rois_in_under_two_seconds() -> None:
    fc = group_fc(synthetic_cohort(3, 1000, n_frames=200, n_networks=17, seed=5).series)
    timings = []
    for _ in range(2):
        t0 = time.perf_counter()
        result = diffusion_map(fc, 30)
        timings.append(time.perf_counter() - t0)
    assert result.gradients.shape == (1000, 30) and np.isfinite(result.gradients).all()
    assert min(timings) < 2.0, timings


def test_procrustes_recovers_a_known_rotation(cohort_fc) -> None:
    fc, _ = cohort_fc
    g = diffusion_map(fc, 6).gradients
    rotation = special_ortho_group.rvs(6, random_state=7)
    aligned, q = procrustes_align(g @ rotation, g)
    np.testing.assert_allclose(q, rotation.T, atol=1e-10)
    np.testing.assert_allclose(aligned, g, atol=1e-12)
    with pytest.raises(ValueError, match="align"):
        procrustes_align(g[:, :5], g)


def test_network_names() -> None:
    assert network_names(["17Networks_LH_DefaultA_PFCm_1", "7Networks_RH_Vis_12"]) == ["DefaultA", "Vis"]
    assert network_names(["17Networks_LH_DefaultA_PFCm_1", "roi_0001"]) is None
    assert network_names([]) is None


def make_artifact(fc: np.ndarray, network: np.ndarray, m: int = 5) -> GradientArtifact:
    provenance = GradientProvenance(atlas="synthetic-7net", source="memory://test", cohort="seed 3", n_scans=5)
    return gradient_artifact(fc, GradientParams(n_components=m), provenance, schaefer_labels(network))


def test_artifact_round_trip(cohort_fc, tmp_path) -> None:
    artifact = make_artifact(*cohort_fc)
    path = tmp_path / "gradients.v1"  # written exactly where asked, no ".npz" appended
    artifact.save(path)
    buffer = io.BytesIO()
    artifact.save(buffer)
    buffer.seek(0)
    for loaded in (GradientArtifact.load(path), GradientArtifact.load(buffer)):
        np.testing.assert_array_equal(loaded.gradients, artifact.gradients)
        np.testing.assert_array_equal(loaded.eigenvalues, artifact.eigenvalues)
        assert loaded.roi_labels == artifact.roi_labels
        assert loaded.params == artifact.params and loaded.provenance == artifact.provenance
    assert artifact.provenance.brainjepa_version and artifact.provenance.created
    assert sorted(np.load(path, allow_pickle=False).files) == ["eigenvalues", "gradients", "metadata"]


def test_artifact_load_names_the_file_on_bad_input(cohort_fc, tmp_path) -> None:
    artifact = make_artifact(*cohort_fc)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(GradientArtifactError, match="corrupt.npz"):
        GradientArtifact.load(corrupt)
    (tmp_path / "junk.npz").write_bytes(b"garbage")
    with pytest.raises(GradientArtifactError, match=r"junk.npz.*not an .npz"):
        GradientArtifact.load(tmp_path / "junk.npz")
    np.save(tmp_path / "array.npy", artifact.gradients)
    with pytest.raises(GradientArtifactError, match=r"array.npy.*single .npy array"):
        GradientArtifact.load(tmp_path / "array.npy")
    meta = json.dumps(artifact.metadata())
    cases = {
        "fewer_labels.npz": dict(gradients=artifact.gradients[:-1], eigenvalues=artifact.eigenvalues),
        "eigenvalues.npz": dict(gradients=artifact.gradients, eigenvalues=artifact.eigenvalues[:-1]),
        "components.npz": dict(gradients=artifact.gradients[:, :-1], eigenvalues=artifact.eigenvalues[:-1]),
    }
    expected = {"fewer_labels.npz": "69 ROIs", "eigenvalues.npz": "eigenvalues", "components.npz": "n_components"}
    for name, arrays in cases.items():
        np.savez(tmp_path / name, metadata=np.array(meta), **arrays)
        with pytest.raises(GradientArtifactError, match=rf"{name}.*{expected[name]}"):
            GradientArtifact.load(tmp_path / name)
    np.savez(
        tmp_path / "pickled.npz",
        gradients=artifact.gradients,
        eigenvalues=artifact.eigenvalues,
        metadata=np.array([artifact.metadata()], dtype=object),
    )
    with pytest.raises(GradientArtifactError, match="pickled.npz"):
        GradientArtifact.load(tmp_path / "pickled.npz")


def test_alignment_reference_must_match(cohort_fc) -> None:
    fc, network = cohort_fc
    reference = make_artifact(fc, network)
    params, provenance = GradientParams(n_components=5), GradientProvenance()
    aligned = gradient_artifact(fc, params, provenance, reference=reference, reference_name="ref.npz")
    assert aligned.params.aligned_to == "ref.npz" and aligned.roi_labels == reference.roi_labels
    np.testing.assert_allclose(aligned.gradients, reference.gradients, atol=1e-10)
    labels = list(reference.roi_labels)
    labels[3] = "somewhere_else"
    with pytest.raises(ValueError, match="ROI 3"):
        gradient_artifact(fc, params, provenance, labels, reference)
    with pytest.raises(ValueError, match="reference"):
        gradient_artifact(fc, GradientParams(n_components=4), provenance, reference=reference)


def test_fc_file_checks(tmp_path) -> None:
    np.save(tmp_path / "wide.npy", np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"wide.npy.*square"):
        load_fc_matrix(tmp_path / "wide.npy")
    (tmp_path / "nan.csv").write_text("1,0.5\n0.5,nan\n")
    with pytest.raises(ValueError, match=r"nan.csv.*NaN.*row 1, column 1"):
        load_fc_matrix(f"file://{tmp_path / 'nan.csv'}")
    (tmp_path / "fc.tsv").write_text("1\t0.5\n0.5\t1\n")
    np.testing.assert_array_equal(load_fc_matrix(tmp_path / "fc.tsv"), [[1, 0.5], [0.5, 1]])
    for source in (tmp_path / "cohort.parquet", tmp_path, tmp_path / "fc.h5"):
        with pytest.raises(ValueError, match="manifest.json"):
            load_fc_matrix(source)
    with pytest.raises(ValueError, match="file://"):
        load_fc_matrix("s3://bucket/fc.npy")
    (tmp_path / "lut.txt").write_text("1\t7Networks_LH_Vis_1\t120\t18\t131\t0\n2\t7Networks_LH_Vis_2\t1\t2\t3\t0\n")
    assert read_roi_labels(tmp_path / "lut.txt", 2) == ["7Networks_LH_Vis_1", "7Networks_LH_Vis_2"]
    with pytest.raises(ValueError, match=r"lut.txt.*2 ROI labels for a 3 x 3"):
        read_roi_labels(tmp_path / "lut.txt", 3)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess]:
    """`brainjepa gradients ARGS` in this process: exit status, stdout and stderr."""
    from brainjepa_platform.cli.main import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main(["gradients", *args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["brainjepa", "gradients", *args], code, out.out, out.err)

    return run


def test_gradients_command_end_to_end(run_cli, cohort_fc, tmp_path) -> None:
    fc, network = cohort_fc
    np.save(tmp_path / "fc.npy", fc)
    (tmp_path / "labels.txt").write_text("\n".join(schaefer_labels(network)) + "\n")
    out, png = tmp_path / "out" / "gradients.npz", tmp_path / "gradients.png"
    done = run_cli(
        str(tmp_path / "fc.npy"),
        "--out",
        str(out),
        "--n-components",
        "8",
        "--labels",
        str(tmp_path / "labels.txt"),
        "--atlas",
        "synthetic-7net",
        "--plot",
        str(png),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["n_rois"] == 70 and len(summary["eigenvalues"]) == 8
    artifact = GradientArtifact.load(out)
    expected = diffusion_map(fc, 8)
    np.testing.assert_allclose(artifact.gradients, expected.gradients, atol=1e-12)
    assert artifact.roi_labels == schaefer_labels(network) and artifact.provenance.atlas == "synthetic-7net"
    assert artifact.provenance.source == (tmp_path / "fc.npy").as_uri()
    assert png.stat().st_size > 20_000

    again = run_cli(
        f"file://{tmp_path / 'fc.npy'}",
        "--out",
        str(tmp_path / "aligned.npz"),
        "--n-components",
        "8",
        "--align-to",
        str(out),
    )
    assert again.returncode == 0, again.stderr
    aligned = GradientArtifact.load(tmp_path / "aligned.npz")
    assert aligned.params.aligned_to == out.as_uri() and aligned.roi_labels == artifact.roi_labels

    np.save(tmp_path / "wide.npy", fc[:, :10])
    failed = run_cli(str(tmp_path / "wide.npy"), "--out", str(tmp_path / "x.npz"))
    assert failed.returncode == 2 and "wide.npy" in failed.stderr and "square" in failed.stderr


def test_default_number_of_gradients_follows_the_atlas() -> None:
    assert [default_components(r) for r in (2, 8, 24, 31, 400)] == [1, 7, 23, 30, 30]
    check_params(24, 23)
    for bad, match in [
        ((24, 24), "between 1 and R-1=23"),
        ((24, 3, "rbf"), "kernel"),
        ((24, 3, "cosine", 0.99), "sparsity"),
        ((24, 3, "cosine", 0.9, 2.0), "alpha"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_params(*bad)


def test_dataset_source_is_checked_before_any_ray_work(forbid_ray, tmp_path, monkeypatch) -> None:
    """`brainjepa gradients data/cohort` on 24 ROIs: the default gives 23 gradients with a note; an explicit
    --n-components 30 fails at once, naming the dataset, without starting Ray."""
    dataset = write_manifest(tmp_path / "cohort", small_manifest(24))  # a dataset without shards
    request = GradientsRequest(source=str(dataset), out=str(tmp_path / "g.npz"), params=GradientParams(30))
    with pytest.raises(ValueError, match=r"cohort: n_components=30 must be between 1 and R-1=23"):
        plan_gradients(request)
    auto = plan_gradients(replace(request, auto_components=True))
    assert auto.params.n_components == 23 and auto.n_rois == 24 and "at most 23" in auto.note
    GradientArtifact(
        np.ones((24, 5)), np.ones(5), [f"roi_{i}" for i in range(24)], GradientParams(5), GradientProvenance()
    ).save(tmp_path / "ref.npz")
    with pytest.raises(ValueError, match="--align-to"):  # a reference of another shape, also before Ray
        plan_gradients(replace(request, auto_components=True, align_to=str(tmp_path / "ref.npz")))


def test_gradients_command_defaults_to_r_minus_one_components(run_cli, tmp_path) -> None:
    fc = group_fc(synthetic_cohort(3, 24, n_frames=120, seed=6).series)
    np.save(tmp_path / "fc.npy", fc)
    done = run_cli(str(tmp_path / "fc.npy"), "--out", str(tmp_path / "g.npz"))
    assert done.returncode == 0, done.stderr
    assert "24 ROIs give at most 23 gradients" in done.stderr
    assert GradientArtifact.load(tmp_path / "g.npz").gradients.shape == (24, 23)
