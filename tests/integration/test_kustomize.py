"""The Kubernetes manifests as `kubectl apply -k deploy/kubernetes` sends them: rendered by
`kubectl kustomize` (offline) and validated against the Kubernetes API schemas. (Each file is
validated on its own in tests/unit/test_deploy_manifests.py.)"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from ..conftest import ROOT

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the test extra")

KUBE = ROOT / "deploy" / "kubernetes"


def test_the_kustomization_renders_valid_manifests_of_the_image_make_image_builds() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomization was not rendered (each file was validated)")
    rendered = subprocess.run([kubectl, "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60, check=True)
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    files = [d for p in sorted(KUBE.glob("*.yaml")) if p.name != "kustomization.yaml"
             for d in yaml.safe_load_all(p.read_text()) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == \
        sorted((d["kind"], d["metadata"]["name"]) for d in files)
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "zeroserve"
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert c["image"] == "zeroserve:0.1.0-examples"  # what `make image` tags
