"""Packaging rules: platform/ never shadows the stdlib, brainjepa/ never imports the platform layer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stdlib_platform_reachable_from_repo_root() -> None:
    code = "import platform; print(platform.system()); import brainjepa_platform.cli"
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
