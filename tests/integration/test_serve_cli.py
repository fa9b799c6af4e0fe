"""`zeroserve serve run|deploy|status|shutdown` as users run them: real processes, the
`zeroserve` console entry handing over to `python -m serve`, real HTTP.

`serve run` starts its own embedded cluster (its ZEROSERVE_TMPDIR holds no cluster) and
must leave no process behind on SIGINT or SIGTERM. The deploy tests share one cluster
started with `zeroserve start --head` in its own ZEROSERVE_TMPDIR, and run in order:
deploy, deploy again (a no-op), changes, status, bad configs (nothing changes), shutdown.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from ..conftest import ROOT, RUN_DIR, driver_env, free_port, run_processes, wait_until

pytestmark = pytest.mark.timeout(120)

ENTRY = [sys.executable, "-c", "import sys; from cluster.cli import main; sys.exit(main())"]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "serve_config.yaml").read_text())


def _env(tmpdir: str) -> dict[str, str]:
    os.makedirs(tmpdir, exist_ok=True)
    return driver_env(ZEROSERVE_TMPDIR=tmpdir)


def zs(tmpdir: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*ENTRY, *args], env=_env(tmpdir), capture_output=True, text=True, timeout=100,
                          cwd=str(ROOT))
    if check and proc.returncode != 0:
        pytest.fail(f"zeroserve {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _label(url: str) -> str | None:
    """The sentiment label at `url`, or None while the proxy does not route it yet (404)."""
    try:
        return _get(url)["label"]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def _read_until(proc: subprocess.Popen, needle: str, timeout: float = 60.0) -> str:
    """stdout up to the first occurrence of `needle` (read straight from the pipe, unbuffered)."""
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(timeout=0.2):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
            if needle.encode() in seen:
                return seen.decode()
        elif proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"no {needle!r} from serve run within {timeout}s:\n{seen.decode()}\n{proc.stderr.read()[-3000:]}")


def _serve_run(tmpdir: str, *args: str) -> subprocess.Popen:
    # its own process group, as a command started from a terminal
    return subprocess.Popen([*ENTRY, "serve", "run", *args], env=_env(tmpdir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(ROOT), start_new_session=True)


def _stops_cleanly(proc: subprocess.Popen, sig: int, tmpdir: str, port: int) -> str:
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C in a terminal: the whole foreground group, cluster processes too
    else:
        proc.send_signal(sig)  # `kill PID`, a service manager
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{out}\n{err[-3000:]}"
    wait_until(lambda: not run_processes(tmpdir), timeout=15, what="the embedded cluster's processes to exit")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthz", timeout=2)
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_run_serves_until_a_signal_and_leaves_nothing_behind(sig: int) -> None:
    tmpdir = os.path.join(RUN_DIR, f"serve-run-{sig.name}")
    port = free_port()
    if sig == signal.SIGINT:  # an import path from here, with --route-prefix
        proc = _serve_run(tmpdir, "examples.serve_app:app", "--port", str(port), "--route-prefix", "/sentiment")
        app = "default"
    else:  # the example config file, its port overridden
        proc = _serve_run(tmpdir, "examples/serve_config.yaml", "--port", str(port))
        app = "sentiment"
    try:
        out = _read_until(proc, "Ctrl-C to stop")
        assert "starting a local one" in out
        assert f"application '{app}' is serving at http://127.0.0.1:{port}/sentiment" in out
        url = f"http://127.0.0.1:{port}/sentiment?text=I+love+it"
        assert wait_until(lambda: _label(url), timeout=10, what="the proxy to route /sentiment") == "positive"
    finally:
        if proc.poll() is None:
            out = _stops_cleanly(proc, sig, tmpdir, port)
    assert f"{sig.name}: shutting down" in out and "serve: stopped" in out


def test_serve_run_refuses_a_bad_target_before_starting_anything() -> None:
    tmpdir = os.path.join(RUN_DIR, "serve-run-bad")
    bad = zs(tmpdir, "serve", "run", "examples.serve_app:nothing", check=False)
    assert bad.returncode == 1 and "applications[0].import_path: cannot import 'examples.serve_app:nothing'" in bad.stderr
    assert "starting a local one" not in bad.stdout and not run_processes(tmpdir)


# -- a cluster started with `zeroserve start --head` -----------------------------------------------------
HEAD_DIR = os.path.join(RUN_DIR, "serve-cli-head")


@pytest.fixture(scope="module")
def head():
    port, http_port = free_port(), free_port()
    zs(HEAD_DIR, "start", "--head", "--port", str(port), "--num-cpus", "4")
    yield {"address": f"127.0.0.1:{port}", "http": f"http://127.0.0.1:{http_port}", "http_port": http_port}
    zs(HEAD_DIR, "serve", "shutdown", check=False)
    zs(HEAD_DIR, "stop")


def _config(tmp_path: Path, head: dict, name: str = "c.yaml", apps: tuple = (), sentiment: bool = True,
            **changes: dict) -> str:
    cfg = json.loads(json.dumps(EXAMPLE))
    cfg["http_options"]["port"] = head["http_port"]
    deps = {d["name"]: d for d in cfg["applications"][0]["deployments"]}
    for dep, opts in changes.items():
        deps.setdefault(dep, {"name": dep}).update(opts)
    cfg["applications"][0]["deployments"] = list(deps.values())
    cfg["applications"] = cfg["applications"][: int(sentiment)] + list(apps)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _replicas() -> dict[str, dict]:
    """{replica_id: {deployment, actor_id, version, pid}} from `serve status --json` and `zeroserve status --json`."""
    st = json.loads(zs(HEAD_DIR, "serve", "status", "--json").stdout)
    pids = {a["name"]: a["pid"] for a in json.loads(zs(HEAD_DIR, "status", "--json").stdout)["actors"]
            if a["state"] == "ALIVE" and a["name"]}
    return {r["replica_id"]: {"deployment": name, "actor_id": r["actor_id"], "version": r["version"],
                              "pid": pids.get(f"SERVE_REPLICA::{r['replica_id']}")}
            for app in st["applications"].values() for name, d in app["deployments"].items()
            for r in d["replica_details"]}


def _of(replicas: dict[str, dict], deployment: str) -> dict[str, dict]:
    return {k: v for k, v in replicas.items() if v["deployment"] == deployment}


def test_deploy_then_deploy_again_changes_nothing(head, tmp_path: Path) -> None:
    config = _config(tmp_path, head)
    first = zs(HEAD_DIR, "serve", "deploy", config).stdout
    assert "sentiment/Sentiment: updating" in first
    assert f"application 'sentiment' is serving at {head['http']}/sentiment" in first
    url = f"{head['http']}/sentiment?text=I+love+it"
    assert wait_until(lambda: _label(url), timeout=10, what="the proxy to route /sentiment") == "positive"
    before = _replicas()
    assert len(_of(before, "Sentiment")) == 2 and all(r["pid"] for r in before.values())

    again = zs(HEAD_DIR, "serve", "deploy", config).stdout
    for name in ("Pipeline", "Sentiment", "Tokenizer"):
        assert f"sentiment/{name}: unchanged" in again
    assert _replicas() == before, "an unchanged config restarted or replaced replicas"


def test_changed_user_config_and_num_replicas_apply_to_live_replicas(head, tmp_path: Path) -> None:
    before = _replicas()
    config = _config(tmp_path, head, Sentiment={"num_replicas": 3, "user_config": {"threshold": 5}})
    out = zs(HEAD_DIR, "serve", "deploy", config).stdout
    assert "sentiment/Sentiment: updating" in out and "sentiment/Tokenizer: unchanged" in out
    # deploy returns once the new user_config is applied: no wait needed
    assert _get(f"{head['http']}/sentiment?text=I+love+it")["label"] == "neutral"
    after = _replicas()
    assert len(_of(after, "Sentiment")) == 3
    assert {k: v for k, v in after.items() if k in before} == before, "live replicas were restarted"


def test_a_changed_max_ongoing_requests_rolls_only_that_deployment(head, tmp_path: Path) -> None:
    before = _replicas()
    config = _config(tmp_path, head, Sentiment={"num_replicas": 3, "user_config": {"threshold": 5}},
                     Tokenizer={"max_ongoing_requests": 40})
    out = zs(HEAD_DIR, "serve", "deploy", config).stdout
    assert "sentiment/Tokenizer: updating" in out and "sentiment/Sentiment: unchanged" in out
    after = _replicas()
    assert not set(_of(after, "Tokenizer")) & set(_of(before, "Tokenizer")), "Tokenizer was not rolled"
    assert {k: v for k, v in after.items() if v["deployment"] != "Tokenizer"} == \
        {k: v for k, v in before.items() if v["deployment"] != "Tokenizer"}
    assert _get(f"{head['http']}/sentiment?text=I+love+it")["label"] == "neutral"


def test_status_table_and_json(head) -> None:
    table = zs(HEAD_DIR, "serve", "status").stdout
    assert f"Serve: HTTP at {head['http']} (HeadOnly)" in table
    lines = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert lines["sentiment"][:3] == ["sentiment", "RUNNING", "/sentiment"]
    assert lines["Sentiment"][:6] == ["Sentiment", "sentiment", "HEALTHY", "3/3", "RUNNING", "3"]
    data = json.loads(zs(HEAD_DIR, "serve", "status", "--json").stdout)
    app = data["applications"]["sentiment"]
    assert app["status"] == "RUNNING" and data["http_options"]["port"] == head["http_port"]
    assert {n: d["replicas"] for n, d in app["deployments"].items()} == \
        {"Pipeline": {"RUNNING": 1}, "Sentiment": {"RUNNING": 3}, "Tokenizer": {"RUNNING": 1}}
    # `zeroserve status` (the cluster's) lists them too
    assert "Sentiment" in zs(HEAD_DIR, "status").stdout


BAD_CONFIGS = [
    ("applications:\n  - name: sentiment\n    import_path: examples.serve_app:app\n    deployments:\n"
     "      - {name: Sentiment}\n      - {name: Tokenizer, num_replicas: -2}\n",
     "applications[0].deployments[1].num_replicas: must be an integer >= 0, got -2"),
    ("applications:\n  - name: sentiment\n    import_path: examples.serve_app:app\n    deployments:\n"
     "      - {name: Sentimint, num_replicas: 1}\n",
     "applications[0].deployments[0].name: application 'sentiment' (examples.serve_app:app) has no deployment "
     "named 'Sentimint'"),
    ("applications:\n  - name: sentiment\n    import_path: examples.serve_app:app\n    replicas: 3\n",
     "applications[0].replicas: unknown field"),
    ("http_options: {port: 70000}\napplications:\n  - import_path: examples.serve_app:app\n",
     "http_options.port: must be an integer in 1..65535, got 70000"),
    ("applications:\n  - import_path: examples.no_such_module:app\n",
     "applications[0].import_path: cannot import 'examples.no_such_module:app'"),
    ("applications: [\n", "not valid YAML"),
]


def test_invalid_configs_fail_naming_the_field_and_change_nothing(head, tmp_path: Path) -> None:
    before = _replicas()
    for i, (text, expected) in enumerate(BAD_CONFIGS):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(text)
        bad = zs(HEAD_DIR, "serve", "deploy", str(path), check=False)
        assert bad.returncode == 1 and expected in bad.stderr, bad.stderr
        assert "updating" not in bad.stdout and "unchanged" not in bad.stdout
    assert _replicas() == before


def _greeting(url: str) -> str | None:
    try:
        return _get(url)["greeting"]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def test_deploy_is_declarative_what_the_config_no_longer_has_is_deleted(head, tmp_path: Path) -> None:
    greet = {"name": "greet", "route_prefix": "/greet", "import_path": "tests.integration.serve_cli_app:build",
             "args": {"greeting": "hi"}}
    keep = {"Sentiment": {"num_replicas": 3, "user_config": {"threshold": 5}}, "Tokenizer": {"max_ongoing_requests": 40}}
    out = zs(HEAD_DIR, "serve", "deploy", _config(tmp_path, head, "two.yaml", apps=(greet,), **keep)).stdout
    assert "greet/Greeter: updating" in out and "sentiment/Sentiment: unchanged" in out
    assert f"application 'greet' is serving at {head['http']}/greet" in out
    assert wait_until(lambda: _greeting(f"{head['http']}/greet"), timeout=10, what="/greet to be routed") == "hi"

    greet["args"] = {"greeting": "ho"}  # new constructor arguments: a roll
    out = zs(HEAD_DIR, "serve", "deploy", _config(tmp_path, head, "one.yaml", apps=(greet,), sentiment=False)).stdout
    assert "deleting deployments not in the config: Pipeline, Sentiment, Tokenizer" in out
    assert "greet/Greeter: updating" in out
    assert list(json.loads(zs(HEAD_DIR, "serve", "status", "--json").stdout)["applications"]) == ["greet"]
    wait_until(lambda: _greeting(f"{head['http']}/greet") == "ho", timeout=10, what="the rolled Greeter")
    wait_until(lambda: _label(f"{head['http']}/sentiment?text=hi") is None, timeout=10, what="/sentiment to go")


def test_serve_run_on_the_running_cluster_removes_only_its_own_app(head) -> None:
    clash = zs(HEAD_DIR, "serve", "run", "tests.integration.serve_cli_app:build", "greeting=yo", "--route-prefix",
               "/greet", check=False)
    assert clash.returncode == 1 and ("route prefix '/greet' is claimed by deployment 'Greeter' of application "
                                      "'greet' and by 'Greeter' of application 'default'") in clash.stderr
    proc = _serve_run(HEAD_DIR, "examples.serve_app:app", "--route-prefix", "/s2", "--name", "s2")
    try:
        out = _read_until(proc, "Ctrl-C to stop")
        assert "starting a local one" not in out and f"application 's2' is serving at {head['http']}/s2" in out
        url = f"{head['http']}/s2?text=I+love+it"
        assert wait_until(lambda: _label(url), timeout=10, what="the proxy to route /s2") == "positive"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert list(json.loads(zs(HEAD_DIR, "serve", "status", "--json").stdout)["applications"]) == ["greet"]
    assert _greeting(f"{head['http']}/greet") == "ho"


def test_a_deployment_that_cannot_start_fails_the_deploy_with_its_error(head, tmp_path: Path) -> None:
    greet = {"name": "greet", "route_prefix": "/greet", "import_path": "tests.integration.serve_cli_app:build",
             "args": {"greeting": "ho"}}
    broken = {"name": "broken", "import_path": "tests.integration.serve_cli_app:broken"}
    bad = zs(HEAD_DIR, "serve", "deploy", _config(tmp_path, head, "b.yaml", apps=(greet, broken), sentiment=False),
             check=False)
    assert bad.returncode == 1 and "greet/Greeter: unchanged" in bad.stdout
    assert "deployment Broken is UNHEALTHY" in bad.stderr and "the model file is missing" in bad.stderr
    table = zs(HEAD_DIR, "serve", "status").stdout
    assert "UNHEALTHY" in table and "the model file is missing" in table
    fixed = zs(HEAD_DIR, "serve", "deploy", _config(tmp_path, head, "g.yaml", apps=(greet,), sentiment=False)).stdout
    assert "deleting deployments not in the config: Broken" in fixed
    assert list(json.loads(zs(HEAD_DIR, "serve", "status", "--json").stdout)["applications"]) == ["greet"]


def _slow(seconds: float) -> dict:
    return {"name": "slow", "route_prefix": "/slow", "import_path": "tests.integration.serve_cli_app:sluggish",
            "args": {"seconds": seconds}}


def _missed_the_deadline(proc: subprocess.CompletedProcess, elapsed: float | None = None) -> None:
    """`serve deploy`/`serve run` gave up at its 3 s deadline: a progress line on the way,
    then an error naming the deployment and why, exit 1."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    progress = [ln for ln in proc.stdout.splitlines()
                if ln.startswith("serve: ") and "Sluggish 0/1 running (UPDATING)" in ln]
    assert progress, proc.stdout
    assert "did not finish within 3 s" in proc.stderr and "Sluggish 0/1 running" in proc.stderr, proc.stderr
    assert any(why in proc.stderr for why in ("constructor running for", "starting for", "waiting to be placed")), \
        proc.stderr
    if elapsed is not None:
        assert elapsed < 15, elapsed  # the 3 s deadline, not the default 300 s nor the 20 s constructor


def test_the_deploy_deadline_from_the_config_and_from_timeout(head, tmp_path: Path) -> None:
    greet = {"name": "greet", "route_prefix": "/greet", "import_path": "tests.integration.serve_cli_app:build",
             "args": {"greeting": "ho"}}
    config = _config(tmp_path, head, "slow.yaml", apps=(greet, _slow(20)), sentiment=False)
    data = yaml.safe_load(Path(config).read_text())
    Path(config).write_text(yaml.safe_dump({**data, "deploy_timeout_s": 3}))
    t0 = time.monotonic()
    _missed_the_deadline(zs(HEAD_DIR, "serve", "deploy", config, check=False), time.monotonic() - t0)
    # --timeout wins over the config's deploy_timeout_s (another constructor argument: a new version to wait for)
    config = _config(tmp_path, head, "slower.yaml", apps=(greet, _slow(21)), sentiment=False)
    Path(config).write_text(yaml.safe_dump({**yaml.safe_load(Path(config).read_text()), "deploy_timeout_s": 600}))
    t0 = time.monotonic()
    _missed_the_deadline(zs(HEAD_DIR, "serve", "deploy", config, "--timeout", "3", check=False),
                         time.monotonic() - t0)
    zs(HEAD_DIR, "serve", "deploy", _config(tmp_path, head, "g.yaml", apps=(greet,), sentiment=False))
    assert list(json.loads(zs(HEAD_DIR, "serve", "status", "--json").stdout)["applications"]) == ["greet"]


def test_serve_run_of_a_config_gives_up_at_its_deploy_timeout_and_leaves_nothing_behind(tmp_path: Path) -> None:
    tmpdir = os.path.join(RUN_DIR, "serve-run-deadline")
    config = tmp_path / "slow.yaml"
    config.write_text(yaml.safe_dump({"deploy_timeout_s": 3, "http_options": {"port": free_port()},
                                      "applications": [_slow(20)]}))
    proc = zs(tmpdir, "serve", "run", str(config), check=False)
    _missed_the_deadline(proc)  # "within 3 s": the config's deadline
    assert "starting a local one" in proc.stdout and "serve: stopped" in proc.stdout
    wait_until(lambda: not run_processes(tmpdir), timeout=15, what="the embedded cluster's processes to exit")


def test_shutdown_removes_everything(head) -> None:
    replica_names = {f"SERVE_REPLICA::{r}" for r in _replicas()}
    out = zs(HEAD_DIR, "serve", "shutdown").stdout
    assert "shut down (1 application deleted: greet)" in out
    assert "Serve is not running" in zs(HEAD_DIR, "serve", "status").stdout
    assert json.loads(zs(HEAD_DIR, "serve", "status", "--json").stdout)["applications"] == {}
    alive = {a["name"] for a in json.loads(zs(HEAD_DIR, "status", "--json").stdout)["actors"] if a["state"] != "DEAD"}
    assert not alive & replica_names and "SERVE_CONTROLLER" not in alive
    assert "nothing to shut down" in zs(HEAD_DIR, "serve", "shutdown").stdout
