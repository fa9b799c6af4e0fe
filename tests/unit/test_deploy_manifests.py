"""The Kubernetes manifests (deploy/kubernetes/), the Dockerfile and the systemd units,
checked without a cluster: every manifest against the Kubernetes API schemas (offline, the
`kubernetes-validate` package, strict: an unknown field fails), and what no schema knows: the `zeroserve`
command lines parse with the real CLI, every $(VAR) they use is defined, the Serve config in
the ConfigMap is valid, ports, names, user ids and grace periods agree across files.

A real Kubernetes cluster is not reachable here (README "Running on Kubernetes" says what
was checked instead): the container test (tests/integration/test_containers.py) runs the same
image and command lines under Docker.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the test extra")

from cluster._cli import _parser  # noqa: E402
from serve._cli import _parser as serve_parser  # noqa: E402
from serve._schema import check_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
KUBE_GPU = ROOT / "deploy" / "kubernetes-gpu"  # an overlay: KUBE plus GPU agents
SYSTEMD = ROOT / "deploy" / "systemd"
# The oldest Kubernetes these manifests claim (policy/v1 PDBs, publishNotReadyAddresses...) and
# the newest the installed schemas know.
VERSIONS = ("1.27.0", kubernetes_validate.latest_version())


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in [*sorted(KUBE.glob("*.yaml")), *sorted(KUBE_GPU.glob("*.yaml"))]:
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


DOCS = _documents()


def _kind(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in DOCS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]["containers"][0]


def _flags(container: dict[str, Any]) -> dict[str, str]:
    out = {}
    for arg in container["args"]:
        key, _, value = arg.partition("=")
        out[key] = value
    return out


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("source", "doc"), DOCS, ids=[f"{s}:{d['kind']}/{d['metadata']['name']}" for s, d in DOCS])
def test_every_manifest_validates_against_the_kubernetes_schemas(source: str, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_a_manifest_with_a_mistake_fails_validation() -> None:
    """The check can fail: an unknown field and a wrong type are both caught."""
    bad = yaml.safe_load(yaml.safe_dump(_kind("Deployment", "zeroserve-agent")))
    _container(bad)["livenesProbe"] = _container(bad).pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)
    bad = yaml.safe_load(yaml.safe_dump(_kind("Deployment", "zeroserve-agent")))
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


def test_the_kustomizations_list_every_manifest() -> None:
    """Rendered (by kubectl) in tests/integration/test_kustomize.py."""
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    files = sorted(p.name for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    gpu = yaml.safe_load((KUBE_GPU / "kustomization.yaml").read_text())
    gpu_files = sorted(p.name for p in KUBE_GPU.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(gpu["resources"]) == sorted(["../kubernetes", *gpu_files])  # the base, and the GPU agents
    assert gpu["images"] == kustomization["images"] and gpu["labels"] == kustomization["labels"]


@pytest.mark.parametrize("name", ["zeroserve-head", "zeroserve-agent", "zeroserve-agent-gpu",
                                  "zeroserve-serve-deploy"])
def test_command_lines_parse_with_the_real_cli_and_their_variables_are_defined(name: str) -> None:
    workload = next(d for _, d in DOCS if d["metadata"]["name"] == name and d["kind"] not in
                    ("Service", "PodDisruptionBudget"))
    c = _container(workload)
    defined = {e["name"] for e in c.get("env", [])}
    used = {v for arg in c["args"] for v in re.findall(r"\$\((\w+)\)", arg)}
    assert used <= defined, f"undefined variables in {name}'s args: {used - defined}"
    args = [re.sub(r"\$\(\w+\)", "2", a) for a in c["args"]]
    assert "ZEROSERVE_TOKEN" in defined
    token = next(e for e in c["env"] if e["name"] == "ZEROSERVE_TOKEN")["valueFrom"]["secretKeyRef"]
    assert token == {"name": "zeroserve-token", "key": "token"}
    if args[0] == "serve":  # `zeroserve serve ...` hands the rest to the serve CLI (cluster.cli): parse it there
        deploy = serve_parser().parse_args(args[1:])  # SystemExit (argparse) on a misspelt flag
        assert deploy.command == "deploy" and deploy.token is None
        head_svc = _kind("Service", "zeroserve-head")
        assert deploy.address == f"{head_svc['metadata']['name']}:{head_svc['spec']['ports'][0]['port']}"
        mount = next(m for m in c["volumeMounts"] if deploy.config.startswith(m["mountPath"] + "/"))
        volume = next(v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
        config_map = _kind("ConfigMap", volume["configMap"]["name"])
        assert deploy.config[len(mount["mountPath"]) + 1:] in config_map["data"]  # the file the Job reads exists
        return
    parsed = _parser().parse_args(args)  # SystemExit (argparse) on a misspelt flag
    assert parsed.command == "start" and parsed.block, "a node under Kubernetes runs in the foreground"
    assert parsed.node_ip == "0.0.0.0" and parsed.advertise_address == "2"  # $(POD_IP)
    assert parsed.token is None and parsed.token_file is None


def test_ports_names_and_grace_periods_agree() -> None:
    head_svc = _kind("Service", "zeroserve-head")
    head = _kind("StatefulSet", "zeroserve-head")
    agent = _kind("Deployment", "zeroserve-agent")
    gpu_agent = _kind("Deployment", "zeroserve-agent-gpu")
    head_flags, agent_flags = _flags(_container(head)), _flags(_container(agent))
    port = head_svc["spec"]["ports"][0]["port"]
    assert head_flags["--port"] == str(port)
    assert agent_flags["--address"] == _flags(_container(gpu_agent))["--address"] == \
        f"{head_svc['metadata']['name']}:{port}"
    assert head["spec"]["serviceName"] == "zeroserve-head-pods" and _kind("Service", "zeroserve-head-pods")
    serve_config = yaml.safe_load(_kind("ConfigMap")["data"]["serve.yaml"])
    config, problems = check_config(serve_config)
    assert config is not None, problems
    http = serve_config["http_options"]
    assert http["location"] == "EveryNode" and http["host"] == "node"
    for workload in (head, agent, gpu_agent):
        c = _container(workload)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["http"] == http["port"]
        assert c["readinessProbe"]["httpGet"] == {"path": "/-/healthz", "port": "http"}
        assert c["livenessProbe"]["exec"]["command"] == ["zeroserve", "health"]
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == ports["metrics"] == 8080
        pod = workload["spec"]["template"]["spec"]
        pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
        grace = float(_flags(c)["--grace-period-s"])
        assert pod["terminationGracePeriodSeconds"] > pre_stop + grace
        assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"]
    assert _kind("Service", "zeroserve-http")["spec"]["ports"][0]["targetPort"] == "http"
    # resource requests match what the node offers
    assert agent_flags["--num-cpus"] == "$(NUM_CPUS)"
    num_cpus = next(e for e in _container(agent)["env"] if e["name"] == "NUM_CPUS")["valueFrom"]["resourceFieldRef"]
    assert num_cpus["resource"] == "requests.cpu" and "cpu" in _container(agent)["resources"]["requests"]
    # the head's state lives on its volume
    mount = _container(head)["volumeMounts"][0]
    assert head_flags["--state-dir"].startswith(mount["mountPath"] + "/")
    assert head["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == mount["name"]
    assert head["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001
    for workload in (agent, gpu_agent):
        pdb = _kind("PodDisruptionBudget", workload["metadata"]["name"])
        assert pdb["spec"]["selector"]["matchLabels"] == workload["spec"]["selector"]["matchLabels"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_gpu_agents_offer_the_gpus_their_pods_get() -> None:
    """deploy/kubernetes-gpu: each pod's `nvidia.com/gpu` limit is what its agent offers with
    --num-gpus (the two written side by side, checked here); the GPU agents are their own
    Deployment, which the CPU agents' selector (and PDB) do not take, and the HTTP Service does."""
    gpu_agent = _kind("Deployment", "zeroserve-agent-gpu")
    c = _container(gpu_agent)
    limits = c["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1 and "nvidia.com/gpu" not in c["resources"].get("requests", {})
    parsed = _parser().parse_args([re.sub(r"\$\(\w+\)", "2", a) for a in c["args"]])
    assert parsed.num_gpus == int(limits["nvidia.com/gpu"])
    assert _flags(c)["--num-cpus"] == "$(NUM_CPUS)" and "cpu" in c["resources"]["requests"]
    pod_labels = gpu_agent["spec"]["template"]["metadata"]["labels"]
    cpu_agent = _kind("Deployment", "zeroserve-agent")
    assert not _selects(cpu_agent["spec"]["selector"]["matchLabels"], pod_labels)
    assert not _selects(gpu_agent["spec"]["selector"]["matchLabels"], cpu_agent["spec"]["template"]["metadata"]["labels"])
    assert _selects(_kind("Service", "zeroserve-http")["spec"]["selector"], pod_labels)
    tolerations = gpu_agent["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    # the CPU agents are unchanged: no GPU asked, none offered
    assert "nvidia.com/gpu" not in _container(cpu_agent)["resources"].get("limits", {})
    assert "--num-gpus" not in _flags(_container(cpu_agent))


def test_the_dockerfile_runs_a_non_root_node_with_a_health_check() -> None:
    text = (ROOT / "Dockerfile").read_text()
    targets = re.findall(r"^FROM \S+ AS (\S+)", text, re.M)
    assert {"runtime", "examples"} <= set(targets)
    runtime = text.split("AS runtime", 1)[1].split("\nFROM ", 1)[0]
    assert re.search(r"^USER 10001:10001$", runtime, re.M)
    assert 'HEALTHCHECK' in runtime and '"zeroserve", "health"' in runtime
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "zeroserve"]' in runtime
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") + 1:][:1]  # an allow-list after "*"


@pytest.mark.parametrize("unit", sorted(SYSTEMD.glob("*.service")), ids=lambda p: p.name)
def test_systemd_units_run_a_foreground_node_with_its_token_off_the_command_line(unit: Path) -> None:
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
            continue
        key, _, value = line.partition("=")
        sections[current][key] = value
    service = sections["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/zeroserve")
    parsed = _parser().parse_args(argv[1:])
    assert parsed.block and parsed.token is None and parsed.token_file
    assert service["KillMode"] == "mixed"  # SIGTERM to zeroserve alone (it drains its workers), SIGKILL to all
    assert float(service["TimeoutStopSec"]) > parsed.grace_period_s
    assert service["Restart"] == "on-failure" and sections["Install"]["WantedBy"] == "multi-user.target"
