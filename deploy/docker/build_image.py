#!/usr/bin/env python3
"""Build zeroserve's container images with no image registry: `make image` runs this.

1. The base image `zeroserve-base:<suite>`: a minimal Debian root made by
   `debootstrap --variant=minbase` from the Debian archive this machine's apt uses, then
   `docker import`ed. Made once per machine (skipped while the image exists; `--rebuild-base`).
2. `zeroserve:<version>` (and `:latest`), the `runtime` target of the Dockerfile at the
   repository's root, and `zeroserve:<version>-examples` (`:examples`), its `examples`
   target. Docker's layer cache makes a rebuild with unchanged dependencies take seconds.

Python packages in the image come from the package index pip uses on this machine: its
configuration (`pip config list` and the PIP_* environment) is turned into a pip.conf for
the build stage (`.image-build/`, not part of the final image). Index URLs that only this
machine can read (file://, local paths) are left out, and the CA bundle pip trusts here is
copied in, so a TLS proxy this machine's pip goes through works inside the build too.
Nothing names a registry's host: whatever this machine uses, the build uses.

The builds run with `--network host` (the classic builder of Debian's docker.io; no
bridge or NAT is needed, see .ci/run).
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = ROOT / ".image-build"  # the build stage's pip settings and requirements (git-ignored)
_NETWORK = re.compile(r"^https?://", re.I)


def say(text: str) -> None:
    print(f"build_image: {text}", flush=True)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def docker() -> str:
    found = shutil.which("docker")
    if found is None:
        sys.exit("build_image: no `docker` command (install Debian's docker.io; .ci/run does)")
    return found


def image_exists(tag: str) -> bool:
    return subprocess.run([docker(), "image", "inspect", tag], capture_output=True).returncode == 0


# -- the base image ---------------------------------------------------------------------------
def host_suite() -> str:
    fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return fields.get("VERSION_CODENAME", "bookworm").strip('"') or "bookworm"


def host_mirror(suite: str) -> str | None:
    """The Debian archive this machine's apt uses for `suite` (None: debootstrap's default)."""
    deb822, listing = Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")
    return mirror_of(suite, deb822.read_text() if deb822.exists() else "",
                     listing.read_text() if listing.exists() else "")


def mirror_of(suite: str, deb822: str, listing: str) -> str | None:
    """The first archive URI for `suite` in apt's sources, deb822 style first, then one-line."""
    for stanza in deb822.split("\n\n"):  # stanzas of "Key: value" lines
        fields = dict(line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#"))
        uris, suites = fields.get("URIs", "").split(), fields.get("Suites", "").split()
        if suite in suites and uris:
            return uris[0]
    for line in listing.splitlines():  # deb [options] URI suite components...
        words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            return words[1]
    return None


def build_base(tag: str, suite: str) -> None:
    if shutil.which("debootstrap") is None:
        sys.exit("build_image: no `debootstrap` (apt-get install debootstrap; .ci/run does)")
    mirror = host_mirror(suite)
    with tempfile.TemporaryDirectory(prefix="zeroserve-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        t0 = time.monotonic()
        say(f"debootstrap --variant=minbase {suite} from {mirror or 'its default mirror'}")
        run(["debootstrap", "--variant=minbase", suite, str(rootfs), *([mirror] if mirror else [])],
            stdout=subprocess.DEVNULL)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (rootfs / cache).glob("*"):
                if f.is_file():
                    f.unlink()
        say(f"debootstrap took {time.monotonic() - t0:.0f}s; importing it as {tag}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run([docker(), "import", "-c", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "-", tag], stdin=tar.stdout, stdout=subprocess.DEVNULL)
        tar.wait()


# -- pip's settings for the build stage --------------------------------------------------------
def host_pip_settings() -> dict[str, str]:
    """pip's effective settings on this machine: `pip config list` (its files), then PIP_*."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    settings: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            settings[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    for key, value in os.environ.items():
        if key.startswith("PIP_"):
            settings[key[4:].lower().replace("_", "-")] = value
    return settings


def pip_config(settings: dict[str, str]) -> tuple[configparser.ConfigParser, dict[str, str], list[str]]:
    """The build stage's pip.conf from this machine's pip `settings`, the files to copy in
    beside it ({source: name}) and notes on what was left out."""
    conf = configparser.ConfigParser()
    conf["global"] = {"disable-pip-version-check": "1", "no-cache-dir": "1"}
    copies: dict[str, str] = {}
    notes = []
    for key in ("index-url", "extra-index-url"):
        urls = settings.get(key, "").split()
        kept = [u for u in urls if _NETWORK.match(u)]
        if kept:
            conf["global"][key] = " ".join(kept)
        if len(kept) < len(urls):
            notes.append(f"{key}: left out what only this machine reads: {[u for u in urls if u not in kept]}")
    if settings.get("trusted-host"):
        conf["global"]["trusted-host"] = settings["trusted-host"]
    if settings.get("default-timeout") or settings.get("timeout"):
        conf["global"]["timeout"] = settings.get("default-timeout") or settings["timeout"]
    for key, name in (("cert", "ca.pem"), ("constraint", "constraints.txt")):
        path = settings.get(key)
        if path and Path(path).is_file():
            copies[path] = name
            conf["global"][key] = f"/etc/zeroserve-build/{name}"
    if settings.get("find-links"):
        notes.append(f"find-links left out (a directory of this machine): {settings['find-links']}")
    return conf, copies, notes


def write_pip_config(into: Path) -> list[str]:
    """Write `pip.conf` (and the CA bundle, constraints) for the build; returns notes."""
    conf, copies, notes = pip_config(host_pip_settings())
    for source, name in copies.items():
        shutil.copyfile(source, into / name)
    with open(into / "pip.conf", "w") as f:
        conf.write(f)
    return notes


def write_requirements(into: Path) -> str:
    import tomllib  # Python >= 3.11 (the machine that builds; the image has its own Python)

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    # The build backend too, so that installing the package needs no download (no isolation).
    reqs = [*project["dependencies"], *pyproject["build-system"]["requires"]]
    (into / "requirements.txt").write_text("\n".join(reqs) + "\n")
    (into / "requirements-examples.txt").write_text("\n".join(project["optional-dependencies"]["examples"]) + "\n")
    return str(project["version"])


# -- the project images -------------------------------------------------------------------------
def build_project(base: str, version: str) -> None:
    # The build stages get a tag too: their layers are the cache of the next build, and an
    # untagged chain would go with the prune of superseded images below.
    for target, tags in (("build-examples", ["zeroserve-build-cache:latest"]),
                         ("runtime", [f"zeroserve:{version}", "zeroserve:latest"]),
                         ("examples", [f"zeroserve:{version}-examples", "zeroserve:examples"])):
        t0 = time.monotonic()
        cmd = [docker(), "build", "--network", "host", "--target", target, "--build-arg", f"BASE={base}",
               *(a for tag in tags for a in ("-t", tag)), str(ROOT)]
        env = dict(os.environ, DOCKER_BUILDKIT="0")  # the classic builder: Debian's docker.io has no buildx
        run(cmd, env=env, stdout=subprocess.DEVNULL if not os.environ.get("ZEROSERVE_BUILD_VERBOSE") else None)
        say(f"built {', '.join(tags)} ({target}) in {time.monotonic() - t0:.0f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="build_image.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--rebuild-base", action="store_true", help="make the Debian base image again")
    p.add_argument("--base-only", action="store_true", help="make the base image and stop")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    suite = host_suite()
    base = f"zeroserve-base:{suite}"
    if args.rebuild_base or not image_exists(base):
        build_base(base, suite)
    else:
        say(f"{base} exists (--rebuild-base makes it again)")
    if args.base_only:
        return 0
    shutil.rmtree(BUILD_DIR, ignore_errors=True)
    BUILD_DIR.mkdir()
    for note in write_pip_config(BUILD_DIR):
        say(note)
    version = write_requirements(BUILD_DIR)
    build_project(base, version)
    # Images a rebuild superseded (untagged now), not the cache of the current ones.
    subprocess.run([docker(), "image", "prune", "-f", "--filter", "label=org.zeroserve.build=1"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    say(f"done in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
