"""Issue 14 item 14 against a real cluster: `serve.status()` as Ray 2.x's `ServeStatus`,
and `zeroserve serve status --format yaml` printing Ray's YAML shape."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

import actors
import serve
from actors.system import local_cluster, read_token
from serve.schema import ServeStatus

from ..conftest import ROOT, driver_env

pytestmark = [pytest.mark.usefixtures("cluster", "fresh_serve"), pytest.mark.timeout(120)]


@serve.deployment(num_replicas=2)
class Translator:
    def __call__(self, text):
        return text[::-1]


def _serve_cli(*args: str) -> subprocess.CompletedProcess:
    """`zeroserve serve ARGS` against this test's embedded cluster."""
    address = actors.init()["address"].removeprefix("tcp://")
    local = local_cluster()
    assert local is not None
    return subprocess.run([sys.executable, "-m", "serve", *args, "--address", address],
                          env=driver_env(ZEROSERVE_TOKEN=read_token(local.token_file)),
                          capture_output=True, text=True, timeout=90, cwd=str(ROOT))


def test_status_object_and_yaml() -> None:
    before = time.time()
    serve.run(Translator.bind(), name="translator", route_prefix="/translate")
    st = serve.status()
    assert isinstance(st, ServeStatus)
    app = st.applications["translator"]
    assert app.status == "RUNNING" and app.message == "" and before <= app.last_deployed_time_s <= time.time()
    d = app.deployments["Translator"]
    assert (d.status, d.status_trigger, d.replica_states, d.message) == \
        ("HEALTHY", "CONFIG_UPDATE_COMPLETED", {"RUNNING": 2}, "")
    assert list(st.proxies.values()) == ["HEALTHY"]
    # Dict-style access, as before, sees the full summary.
    assert st["applications"]["translator"]["deployments"]["Translator"]["replicas"] == {"RUNNING": 2}
    assert yaml.safe_load(str(st))["applications"]["translator"]["deployments"]["Translator"]["replica_states"] \
        == {"RUNNING": 2}

    out = _serve_cli("status", "--format", "yaml")
    assert out.returncode == 0, out.stderr
    shown = yaml.safe_load(out.stdout)
    assert shown["applications"]["translator"]["status"] == "RUNNING"
    assert shown["applications"]["translator"]["deployments"]["Translator"] == {
        "status": "HEALTHY", "status_trigger": "CONFIG_UPDATE_COMPLETED", "replica_states": {"RUNNING": 2},
        "message": ""}
    assert list(shown["proxies"].values()) == ["HEALTHY"] and shown["target_capacity"] is None
    as_json = _serve_cli("status", "--format", "json")
    assert as_json.returncode == 0 and '"translator"' in as_json.stdout


@serve.deployment
class Broken:
    def __init__(self):
        raise RuntimeError("boom in __init__")


def test_status_of_an_unhealthy_application() -> None:
    with pytest.raises(serve.DeploymentUnhealthyError):
        serve.run(Broken.bind(), name="broken", route_prefix="/broken", timeout_s=60)
    app = serve.status().applications["broken"]
    assert app.status == "UNHEALTHY"
    assert app.deployments["Broken"].status == "UNHEALTHY" and "boom in __init__" in app.deployments["Broken"].message
    assert app.message.startswith("deployment Broken: ") and "boom in __init__" in app.message
