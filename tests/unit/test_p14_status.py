"""Issue 14 item 14: `serve.status()` as Ray 2.x's `ServeStatus` over the controller's
summary: attributes with Ray's names, dict-style access to the whole summary, printed in
Ray's YAML shape."""

from __future__ import annotations

import yaml

from serve.messages import ApplicationStatus, DeploymentStatus, ProxyStatus, ReplicaState
from serve.schema import ApplicationStatusOverview, DeploymentStatusOverview, ServeStatus


def summary() -> dict:
    """What the controller's `status()` answers (its enums, as they arrive pickled)."""
    return {
        "applications": {
            "default": {
                "status": ApplicationStatus.UNHEALTHY, "last_deployed_time_s": 1700000000.5,
                "deployments": {
                    "Model": {"status": DeploymentStatus.HEALTHY, "message": "", "target_replicas": 2,
                              "replicas": {ReplicaState.RUNNING: 2}, "version": "v1", "route_prefix": "/",
                              "replica_details": [], "progress": ""},
                    "Broken": {"status": DeploymentStatus.UNHEALTHY, "message": "boom in __init__",
                               "target_replicas": 1, "replicas": {}, "version": "v1", "route_prefix": None,
                               "replica_details": [], "progress": ""},
                },
            },
        },
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "proxies": {"n1": {"node_id": "n1", "node_ip": "127.0.0.1", "state": ProxyStatus.HEALTHY, "url": "",
                           "message": "", "failure": None, "failures": 0}},
    }


def test_attributes_have_rays_names_and_types() -> None:
    st = ServeStatus(summary())
    assert st.proxies == {"n1": ProxyStatus.HEALTHY}
    app = st.applications["default"]
    assert isinstance(app, ApplicationStatusOverview)
    assert app.status == ApplicationStatus.UNHEALTHY == "UNHEALTHY"
    assert app.last_deployed_time_s == 1700000000.5
    assert app.message == "deployment Broken: boom in __init__"
    model = app.deployments["Model"]
    assert isinstance(model, DeploymentStatusOverview)
    assert model.status == DeploymentStatus.HEALTHY and model.status_trigger == "CONFIG_UPDATE_COMPLETED"
    assert model.replica_states == {"RUNNING": 2} and model.message == ""
    assert app.deployments["Broken"].status_trigger == "REPLICA_STARTUP_FAILED"
    assert st.target_capacity is None


def test_dict_style_access_sees_the_whole_summary() -> None:
    raw = summary()
    st = ServeStatus(raw)
    assert st["applications"]["default"]["deployments"]["Model"]["replicas"] == {"RUNNING": 2}
    assert st["http_options"]["port"] == 8000 and dict(st) == raw and st == raw
    assert st.applications["default"]["deployments"]["Model"]["target_replicas"] == 2
    assert set(st) == {"applications", "http_options", "proxies"} and "proxies" in st


def test_printed_in_rays_yaml_shape() -> None:
    text = str(ServeStatus(summary()))
    assert yaml.safe_load(text) == {
        "proxies": {"n1": "HEALTHY"},
        "applications": {"default": {
            "status": "UNHEALTHY", "message": "deployment Broken: boom in __init__",
            "last_deployed_time_s": 1700000000.5,
            "deployments": {
                "Broken": {"status": "UNHEALTHY", "status_trigger": "REPLICA_STARTUP_FAILED", "replica_states": {},
                           "message": "boom in __init__"},
                "Model": {"status": "HEALTHY", "status_trigger": "CONFIG_UPDATE_COMPLETED",
                          "replica_states": {"RUNNING": 2}, "message": ""},
            }}},
        "target_capacity": None,
    }
    assert text.startswith("proxies:\n  n1: HEALTHY\napplications:\n  default:\n    status: UNHEALTHY")
    assert repr(ServeStatus(summary())).startswith("ServeStatus({'proxies': {'n1': 'HEALTHY'}")


def test_no_applications() -> None:
    st = ServeStatus({"applications": {}, "http_options": None})
    assert st.applications == {} and st.proxies == {} and st["applications"] == {}
    assert yaml.safe_load(str(st)) == {"proxies": {}, "applications": {}, "target_capacity": None}
