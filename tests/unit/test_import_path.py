"""An application's import path, end to end without processes: where it comes from (a
config's / `serve run`'s `module:app`, the ingress's `module:QualName` for `serve.run(app)`),
that the controller keeps it and publishes it (the KV summary, `serve.status()`), the
dashboard's `/api/serve`, and that a target pickled before the field existed (an older
controller's checkpoint) still loads."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

import serve
from cluster._dashboard._api import Api
from cluster._dashboard._sampler import Sampler
from serve._api.application import app_targets
from serve._api.status import ServeStatus
from serve._build import build_config
from serve._cli import render
from serve._data.client import STATUS_KEY
from serve.messages import DeploymentTarget

from .test_controller import FakeIO, controller_on, healthy, run, step, target
from .test_dashboard_unit import FakeSource, _get


@serve.deployment
class Inner:
    def __call__(self) -> str:
        return "inner"


@serve.deployment
class Front:
    def __init__(self, inner: object) -> None:
        self.inner = inner


def test_serve_run_targets_carry_the_ingress_module_and_qualname_on_the_ingress_only() -> None:
    _, targets = app_targets(Front.bind(Inner.bind()), "app")
    paths = {t.name: (t.ingress, t.import_path) for t in targets}
    assert paths == {"Front": (True, f"{__name__}:Front"), "Inner": (False, "")}


def test_a_config_build_carries_the_configs_import_path() -> None:
    _, built = build_config({"applications": [{"name": "greet", "route_prefix": "/g", "args": {"greeting": "hi"},
                                               "import_path": "tests.integration.serve_cli_app:build"}]})
    (app,) = built
    assert [(t.name, t.ingress, t.import_path) for t in app.targets] == [
        ("Greeter", True, "tests.integration.serve_cli_app:build")]


def test_a_target_pickled_without_the_field_loads_with_no_import_path(monkeypatch: pytest.MonkeyPatch) -> None:
    t = dataclasses.replace(target(), ingress=True, import_path="m:app")
    assert pickle.loads(pickle.dumps(t)) == t
    original = DeploymentTarget.__getstate__
    monkeypatch.setattr(DeploymentTarget, "__getstate__", lambda self: original(self)[:-1])  # as an older one pickled
    old_blob = pickle.dumps(t)
    monkeypatch.undo()
    loaded = pickle.loads(old_blob)
    assert loaded.import_path == "" and loaded.ingress and loaded == dataclasses.replace(t, import_path="")
    monkeypatch.setattr(DeploymentTarget, "__getstate__", lambda self: original(self)[:-3])
    older = pickle.dumps(t)  # `version_given` and `ingress` have defaults too
    monkeypatch.undo()
    assert pickle.loads(older) == dataclasses.replace(t, version_given=False, ingress=False, import_path="")
    monkeypatch.setattr(DeploymentTarget, "__getstate__", lambda self: original(self)[:3])
    broken = pickle.dumps(t)  # `code` has no default: an error that names it
    monkeypatch.undo()
    with pytest.raises(TypeError, match="'code'"):
        pickle.loads(broken)


def test_the_controller_publishes_the_import_path_in_the_summary_and_the_status() -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        ingress = dataclasses.replace(target("front", n=1), ingress=True, import_path="pkg.mod:app")
        await c.deploy([ingress, target("back", n=1, route=None)])
        await healthy(c, io)
        await step(c)
        summary = json.loads(io.kv[STATUS_KEY])  # the FakeIO keeps the published summary there
        assert summary["app#front"]["import_path"] == "pkg.mod:app" and summary["app#back"]["import_path"] is None
        st = (await c.listen(STATUS_KEY, -1, 0.0)).value
        assert st["applications"]["app"]["import_path"] == "pkg.mod:app"
        assert (await c.status())["applications"]["app"]["import_path"] == "pkg.mod:app"  # `serve status --json`
        status = ServeStatus(st)
        assert status.applications["app"].import_path == "pkg.mod:app"
        assert "import_path" not in status.to_dict()["applications"]["app"]  # the YAML keeps Ray's shape
        (row,) = [ln.split() for ln in render(st).splitlines() if ln.split()[:1] == ["app"]]  # `serve status`
        assert row[-1] == "pkg.mod:app"

    run(main())


def test_api_serve_shows_each_applications_import_path() -> None:
    src = FakeSource()
    entry = src.summary["app#Dep"]
    src.summary = {"app#Dep": {**entry, "import_path": "pkg.mod:app"},
                   "app#Helper": {**entry, "name": "Helper", "route_prefix": None, "import_path": None},
                   "old#Dep": {**entry, "app": "old"}}  # a summary from before the field: no import path
    status, body = _get(Api(src, Sampler(), clock=lambda: 1100.0), "/api/serve")
    assert status == 200
    assert {a["name"]: a["import_path"] for a in body["applications"]} == {"app": "pkg.mod:app", "old": None}
