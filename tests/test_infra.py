"""GPU-cluster configs: the launcher YAML against Ray's own schema, the KubeRay manifests, the image, the MLflow
stack, and that every job script and config they name exists."""

from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
from ray.autoscaler._private.util import prepare_config, validate_config

from brainjepa_platform.cli import submit as cli_submit

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
LAUNCHER = INFRA / "cluster" / "aws-gpu.yaml"
KUBERAY = INFRA / "kuberay"
KUBERAY_SCHEMA = ROOT / "tests" / "data" / "kuberay" / "ray.io-v1.schema.json"  # see its $comment
DOCKERFILE = INFRA / "docker" / "Dockerfile"
COMPOSE = INFRA / "services" / "docker-compose.yaml"
IMAGE_CHECKOUT = "/home/ray/brainjepa"
JOB_KINDS = {"pretrain", "sweep", "ingest", "evaluate"}


def ray_schema() -> dict:
    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def launcher() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def manifests() -> list[dict]:
    return [doc for path in sorted(KUBERAY.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> list[dict]:
    return [doc for doc in manifests() if doc["kind"] == kind]


def pod_specs() -> dict[str, dict]:
    """Pod spec of the head and of each worker group of the RayCluster."""
    (cluster,) = of_kind("RayCluster")
    specs = {"head": cluster["spec"]["headGroupSpec"]["template"]["spec"]}
    specs.update({g["groupName"]: g["template"]["spec"] for g in cluster["spec"]["workerGroupSpecs"]})
    return specs


def quantity_gib(value: str) -> float:
    units = {"Gi": 1.0, "Mi": 1 / 1024, "G": 1e9 / 2**30, "M": 1e6 / 2**30}
    for unit, scale in units.items():
        if value.endswith(unit):
            return float(value[: -len(unit)]) * scale
    return float(value) / 2**30


# --- Ray cluster launcher ----------------------------------------------------------------------------------


def test_launcher_config_validates_against_rays_schema() -> None:
    cfg = launcher()
    jsonschema.validate(cfg, ray_schema())
    validate_config(prepare_config(copy.deepcopy(cfg)))  # Ray's own checks: head type exists, worker counts
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU")}
    assert {t["node_config"]["InstanceType"] for t in gpu_types.values()} >= {"g5.2xlarge", "p4d.24xlarge"}
    assert all(t["min_workers"] == 0 for t in gpu_types.values())  # GPUs only while jobs need them
    assert cfg["max_workers"] >= sum(
        t.get("max_workers", 0) for name, t in types.items() if name != cfg["head_node_type"]
    )


def test_launcher_installs_the_checkout_and_starts_ray_with_token_auth() -> None:
    cfg = launcher()
    assert cfg["file_mounts"]["~/brainjepa"] == "."
    assert any("pip install" in c and "~/brainjepa" in c for c in cfg["setup_commands"])
    assert cfg["docker"]["image"].endswith("/brainjepa:0.1.0")
    for command in (cfg["head_start_ray_commands"][-1], cfg["worker_start_ray_commands"][-1]):
        assert "RAY_AUTH_MODE=token ray start" in command and ". ~/brainjepa-cluster.env" in command
    assert "--dashboard-host=127.0.0.1" in cfg["head_start_ray_commands"][-1]
    assert {".git", ".venv", "runs", "mlruns", "*.db", ".env"} <= set(cfg["rsync_exclude"])


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c.update(unknown_top_level_key=1),
        lambda c: c["available_node_types"]["gpu_a10g"]["resources"].update(GPU="one"),
        lambda c: c["available_node_types"]["gpu_a10g"].pop("node_config"),
        lambda c: c.pop("provider"),
        lambda c: c["docker"].update(imagee="typo"),
        lambda c: c.update(setup_commands="pip install ."),
    ],
)
def test_broken_launcher_config_fails_the_schema(break_it) -> None:
    cfg = launcher()
    break_it(cfg)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cfg, ray_schema())


def test_launcher_head_type_must_exist() -> None:
    cfg = launcher()
    cfg["head_node_type"] = "no_such_type"
    jsonschema.validate(cfg, ray_schema())  # the schema alone cannot see this; Ray's validation does
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(cfg))


# --- KubeRay -----------------------------------------------------------------------------------------------


def test_kuberay_manifests_parse_with_expected_kinds() -> None:
    kinds = sorted(doc["kind"] for doc in manifests())
    assert kinds == ["ConfigMap", "RayCluster", "RayJob", "RayJob", "RayJob", "RayJob"]
    assert {doc["apiVersion"] for doc in of_kind("RayCluster") + of_kind("RayJob")} == {"ray.io/v1"}
    assert {job["metadata"]["name"] for job in of_kind("RayJob")} == {f"brainjepa-{k}" for k in JOB_KINDS}


def kuberay_schema(kind: str) -> dict:
    """The schema of one kind (RayCluster, RayJob, ConfigMap) from the checked-in ray.io/v1 subset."""
    return {"$defs": json.loads(KUBERAY_SCHEMA.read_text())["$defs"], "$ref": f"#/$defs/{kind}"}


def test_kuberay_manifests_validate_against_the_crd_schemas() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(KUBERAY_SCHEMA.read_text()))
    for doc in manifests():
        jsonschema.validate(doc, kuberay_schema(doc["kind"]), cls=jsonschema.Draft202012Validator)


def _container(doc: dict) -> dict:
    return doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("kind", "break_it"),
    [
        ("RayCluster", lambda d: d["spec"].update(workerGroupSpec=d["spec"].pop("workerGroupSpecs"))),  # a typo
        ("RayCluster", lambda d: d["spec"]["workerGroupSpecs"][0].update(maxReplicas="8")),
        ("RayCluster", lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0})),  # not "0"
        ("RayCluster", lambda d: d["spec"]["workerGroupSpecs"][1].pop("groupName")),
        ("RayCluster", lambda d: _container(d).pop("name")),
        ("RayCluster", lambda d: _container(d).update(imagePullPolicy="Sometimes")),
        ("RayCluster", lambda d: _container(d)["resources"]["limits"].update(memory="16GB")),
        ("RayCluster", lambda d: _container(d)["env"][1]["valueFrom"]["secretKeyRef"].pop("key")),
        ("RayCluster", lambda d: d["spec"]["autoscalerOptions"].update(upscalingMode="Eager")),
        ("RayCluster", lambda d: d.update(apiVersion="ray.io/v1alpha1")),
        ("RayJob", lambda d: d["spec"].update(entrypoint=["python", "jobs/pretrain.py"])),
        ("RayJob", lambda d: d["spec"].update(shutdownAfterJobFinish=False)),  # a typo
        ("RayJob", lambda d: d["spec"]["submitterPodTemplate"]["spec"].update(restartPolicy="Sometimes")),
        ("RayJob", lambda d: d["spec"]["submitterPodTemplate"]["spec"].pop("containers")),
    ],
)
def test_broken_kuberay_manifest_fails_the_schema(kind: str, break_it) -> None:
    doc = copy.deepcopy(of_kind(kind)[0])
    break_it(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, kuberay_schema(kind), cls=jsonschema.Draft202012Validator)


def test_ray_autoscaler_reads_the_raycluster_as_intended() -> None:
    """What Ray's KubeRay autoscaler derives from the RayCluster (its own reader, as on the cluster) is a valid
    autoscaler config: a head without CPUs for tasks, GPU workers from 0 with their GPU, CPU workers without."""
    (cluster,) = of_kind("RayCluster")
    cluster = {**cluster, "metadata": {**cluster["metadata"], "namespace": "brainjepa"}}
    cfg = _derive_autoscaling_config_from_ray_cr(copy.deepcopy(cluster))
    jsonschema.validate(cfg, ray_schema())
    types = cfg["available_node_types"]
    assert set(types) == {"headgroup", "gpu", "cpu"}
    assert types["headgroup"]["resources"]["CPU"] == 0 and "GPU" not in types["headgroup"]["resources"]
    assert types["gpu"]["resources"]["GPU"] >= 1 and types["gpu"]["min_workers"] == 0 < types["gpu"]["max_workers"]
    assert "GPU" not in types["cpu"]["resources"] and types["cpu"]["min_workers"] == 0
    assert cfg["idle_timeout_minutes"] * 60 == cluster["spec"]["autoscalerOptions"]["idleTimeoutSeconds"]


def test_raycluster_autoscales_gpu_workers_with_gpu_limits_and_shm() -> None:
    (cluster,) = of_kind("RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True and spec["rayVersion"] == ray.__version__
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu = groups["gpu"]
    assert gpu["minReplicas"] == 0 < gpu["maxReplicas"]
    (container,) = gpu["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == container["resources"]["requests"]["nvidia.com/gpu"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert "nvidia.com/gpu" not in json.dumps(groups["cpu"]) + json.dumps(spec["headGroupSpec"])
    for name, pod in pod_specs().items():
        (container,) = pod["containers"]
        shm = [v for v in pod["volumes"] if v["name"] == "shm"]
        assert shm and shm[0]["emptyDir"]["medium"] == "Memory", name
        assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"], name
        memory = quantity_gib(container["resources"]["limits"]["memory"])
        if name != "head":  # Ray's object store defaults to 30% of memory and lives in /dev/shm
            assert quantity_gib(shm[0]["emptyDir"]["sizeLimit"]) >= 0.3 * memory, name
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0


def _auth_env_ok(env: list[dict]) -> bool:
    by_name = {e["name"]: e for e in env}
    return by_name["RAY_AUTH_MODE"].get("value") == "token" and by_name["RAY_AUTH_TOKEN"]["valueFrom"][
        "secretKeyRef"
    ] == {"name": "brainjepa-ray-token", "key": "auth_token"}


def test_every_ray_container_gets_settings_secret_and_token_by_reference() -> None:
    (config_map,) = of_kind("ConfigMap")
    assert "MLFLOW_TRACKING_URI" in config_map["data"]
    images = set()
    for name, pod in pod_specs().items():
        (container,) = pod["containers"]
        images.add(container["image"])
        refs = [next(iter(e.items())) for e in container["envFrom"]]
        assert ("configMapRef", {"name": config_map["metadata"]["name"]}) in refs, name
        assert ("secretRef", {"name": "brainjepa-object-store"}) in refs, name
        assert _auth_env_ok(container["env"]), name
    (cluster,) = of_kind("RayCluster")
    assert _auth_env_ok(cluster["spec"]["autoscalerOptions"]["env"])
    for job in of_kind("RayJob"):
        (submitter,) = job["spec"]["submitterPodTemplate"]["spec"]["containers"]
        images.add(submitter["image"])
        assert _auth_env_ok(submitter["env"]), job["metadata"]["name"]
    assert len(images) == 1  # one image for head, workers and submitters


def test_no_credential_values_in_infra_files() -> None:
    text = "\n".join(p.read_text() for p in INFRA.rglob("*") if p.is_file() and p.name != ".env.example")
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # an AWS access key id
    for doc in manifests():
        assert doc["kind"] != "Secret", "Secrets are created with kubectl, never kept in the repository"
    for line in text.splitlines():
        match = re.match(r"\s*-?\s*(AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID|RAY_AUTH_TOKEN)\s*[:=]\s*(\S+)", line)
        if match:
            assert match.group(2).startswith(("${", "...", '"$', "$")), line


def test_rayjobs_run_on_the_cluster_from_the_image_checkout() -> None:
    (cluster,) = of_kind("RayCluster")
    for job in of_kind("RayJob"):
        spec = job["spec"]
        kind = job["metadata"]["name"].removeprefix("brainjepa-")
        assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
        assert not spec.get("shutdownAfterJobFinishes")  # never tear down the shared cluster
        assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"working_dir": f"local://{IMAGE_CHECKOUT}"}
        assert shlex.split(spec["entrypoint"])[:2] == ["python", f"jobs/{kind}.py"]


def _named_paths(text: str) -> set[str]:
    return set(re.findall(r"\bjobs/\w+\.py\b", text)) | set(re.findall(r"\bconfigs/[\w./-]+?\.ya?ml\b", text))


def test_every_job_script_and_config_named_exists() -> None:
    """Entrypoints of the RayJobs, the launcher and docs/cluster.md: jobs/sweep.py, jobs/evaluate.py and
    configs/sweep/masking.yaml come with the sweep and evaluation work."""
    named = {path for job in of_kind("RayJob") for path in _named_paths(job["spec"]["entrypoint"])}
    assert {f"jobs/{k}.py" for k in JOB_KINDS} <= named
    named |= _named_paths(LAUNCHER.read_text()) | _named_paths((ROOT / "docs" / "cluster.md").read_text())
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"named in infra/ or docs/cluster.md but not in the repository: {missing}"


def test_submit_lines_in_the_docs_parse() -> None:
    parser = argparse.ArgumentParser(prog="brainjepa")
    cli_submit.register(parser.add_subparsers(dest="command", required=True))
    text = (ROOT / "docs" / "cluster.md").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("brainjepa submit ")]
    assert {shlex.split(line)[2] for line in lines} == JOB_KINDS
    for line in lines:
        args = parser.parse_args(shlex.split(line)[1:])
        assert args.address == "http://127.0.0.1:8265" and args.args, line


# --- image -------------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, as Docker reads them: comments dropped, continued lines joined."""
    instructions, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        keyword, _, args = current.strip().partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        current = ""
    return instructions


def test_dockerfile_runs_as_non_root_and_installs_the_pinned_project() -> None:
    instructions = dockerfile_instructions()
    of = {k: [a for i, a in instructions if i == k] for k in {i for i, _ in instructions}}
    args = dict(a.split("=", 1) for a in of["ARG"])
    assert of["USER"] and of["USER"][-1] not in ("root", "0")
    assert [k for k, _ in instructions].index("USER") > max(i for i, (k, _) in enumerate(instructions) if k == "RUN")
    assert any(shlex.split(a)[:2] == ["useradd", "--create-home"] for a in of["RUN"])
    assert any(a.startswith("pip install --no-deps /home/ray/brainjepa ") for a in of["RUN"])  # the project itself
    assert any("tomllib" in a and "pip install -r" in a for a in of["RUN"])  # pinned dependencies of pyproject
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(d for d in deps if d.startswith("torch=="))
    assert args["TORCH_VERSION"] == torch_pin.removeprefix("torch==")
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", args["TORCH_INDEX_URL"])
    assert any('--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in a for a in of["RUN"])
    assert of["WORKDIR"] == [IMAGE_CHECKOUT]
    assert of["FROM"] == ["${PYTHON_IMAGE}"]
    assert args["PYTHON_IMAGE"].startswith("python:3.11")  # requires-python >= 3.11, same minor as the clients


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "runs", "mlruns", "*.db", "demo-output", ".git", ".env"} <= patterns
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    for needed in ("pyproject.toml", readme, "brainjepa", "platform", "jobs", "configs"):
        assert needed not in patterns  # `pip install .` and the jobs need these in the build context


# --- MLflow stack ------------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_mlflow_stack_uses_postgres_and_s3_and_binds_loopback() -> None:
    services = compose()["services"]
    assert {"postgres", "minio", "mlflow"} <= set(services)
    env = services["mlflow"]["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert "--serve-artifacts" in services["mlflow"]["command"]  # clients need no object-store credentials
    assert "ports" not in services["postgres"]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("${BIND_ADDRESS:-127.0.0.1}:") for p in published)
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    mlflow_pin = next(d for d in pins if d.startswith("mlflow=="))
    assert mlflow_pin in (INFRA / "services" / "mlflow" / "Dockerfile").read_text()


def test_mlflow_stack_credentials_come_from_an_untracked_env_file() -> None:
    text = COMPOSE.read_text()
    example = dict(
        line.split("=", 1)
        for line in (INFRA / "services" / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in set(re.findall(r"\$\{(\w+)(?::?[-?][^}]*)?\}", text)):
        assert name in example, f"{name} is used by docker-compose.yaml but not in .env.example"
    for name, value in example.items():
        if re.search("PASSWORD|SECRET|ACCESS_KEY|ROOT_USER", name):
            assert value.startswith("CHANGE_ME"), name
    for service in compose()["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|SECRET|ACCESS_KEY", name):
                assert str(value).startswith("${"), name
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/services/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "infra/services/.env must be git-ignored"
