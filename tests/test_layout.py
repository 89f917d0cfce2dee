"""Packaging rules: platform/ never shadows the stdlib, brainjepa/ never imports the platform layer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stdlib_platform_reachable_from_repo_root() -> None:
    code = "import platform; print(platform.system()); import brainjepa_platform.cli.main"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() in {"Linux", "Darwin", "Windows"}
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_model_library_imports_no_platform_packages() -> None:
    modules = sorted(p.stem for p in (ROOT / "brainjepa").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module('brainjepa.' + m)\n"
        "bad = [m for m in ('ray', 'mlflow', 's3fs', 'boto3', 'botocore') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"brainjepa pulled in {out.stdout.strip()}"
    assert len(modules) >= 10


# The data path, bottom to top: a package may import its own layer and the layers below it, never above.
LAYERS = {
    "storage": 0,
    "credentials": 0,
    "errors": 0,
    "plots": 0,
    "cluster": 0,
    "config_files": 0,
    "tables": 0,
    "data": 1,
    "train": 2,
    "tracking": 3,
    "evaluate": 4,
    "sweep": 5,
    "cli": 6,
}


def _platform_imports(path: Path) -> set[str]:
    """Top-level names under ``brainjepa_platform`` that a module imports (anywhere in it, lazily too)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "brainjepa_platform":
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "brainjepa_platform" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_platform_imports_follow_the_data_path() -> None:
    """data -> train -> tracking -> evaluate -> sweep -> cli, with storage/cluster/errors/plots below all:
    no module imports a package above its own."""
    modules = sorted((ROOT / "platform").rglob("*.py"))
    assert len(modules) >= 40
    backward = []
    for path in modules:
        rel = path.relative_to(ROOT / "platform")
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        assert own in LAYERS, f"platform/{rel}: place it in one of {sorted(LAYERS)}"
        for name in _platform_imports(path):
            if LAYERS[name] > LAYERS[own]:
                backward.append(f"platform/{rel} imports brainjepa_platform.{name}")
    assert not backward, "imports against the data path:\n" + "\n".join(backward)


def test_every_platform_package_is_declared() -> None:
    """A non-editable install (the Docker image) ships exactly the packages pyproject.toml lists."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(setuptools["packages"])
    on_disk = {"brainjepa", "brainjepa_platform"} | {
        "brainjepa_platform." + p.parent.name for p in (ROOT / "platform").glob("*/__init__.py")
    }
    on_disk |= {name for name, folder in setuptools["package-dir"].items() if (ROOT / folder / "__init__.py").exists()}
    assert "brainjepa_platform.configs" in on_disk  # configs/, installed with its YAML files as package data
    assert on_disk <= declared, f"not in pyproject.toml's packages: {sorted(on_disk - declared)}"
    assert "**/*.yaml" in setuptools["package-data"]["brainjepa_platform.configs"]


def test_bundle_and_embedding_code_do_not_import_mlflow() -> None:
    """Ray Data actors embed with the encoder bundle: importing it (or the embedding module) leaves MLflow out."""
    modules = [
        "brainjepa_platform.tracking.bundle",
        "brainjepa_platform.tracking.names",
        "brainjepa_platform.evaluate.embed",
    ]
    for module in modules:  # one fresh interpreter each: one module importing mlflow must not hide another
        code = f"import sys, {module}\nprint('mlflow' in sys.modules)\n"
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "False", f"importing {module} imported mlflow"
