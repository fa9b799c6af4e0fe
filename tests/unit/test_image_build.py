"""deploy/docker/build_image.py, its pure parts: which Debian archive the base image comes
from (this machine's apt sources) and what of this machine's pip settings the image build
gets (network indexes and the CA bundle, not what only this machine can read)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("build_image", ROOT / "deploy" / "docker" / "build_image.py")
assert _spec is not None and _spec.loader is not None
build_image = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_image)

DEB822 = """Types: deb
# a comment: with a colon
URIs: http://archive.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://archive.invalid/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_base_image_comes_from_the_archive_apt_uses_here() -> None:
    assert build_image.mirror_of("bookworm", DEB822, "") == "http://archive.invalid/debian"
    one_line = "# deb http://old.invalid/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://m.invalid/d bookworm main\n"
    assert build_image.mirror_of("bookworm", "", one_line) == "http://m.invalid/d"
    assert build_image.mirror_of("trixie", DEB822, one_line) is None  # debootstrap's own default then


def test_the_build_gets_the_network_indexes_and_the_ca_bundle_not_local_paths(tmp_path: Path) -> None:
    cert = tmp_path / "ca.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    conf, copies, notes = build_image.pip_config({
        "index-url": "https://index.invalid/simple",
        "extra-index-url": "file:///opt/local/simple https://extra.invalid/simple",
        "find-links": "/opt/wheels", "cert": str(cert), "trusted-host": "index.invalid", "default-timeout": "180",
    })
    g = conf["global"]
    assert g["index-url"] == "https://index.invalid/simple"
    assert g["extra-index-url"] == "https://extra.invalid/simple"
    assert "find-links" not in g and g["trusted-host"] == "index.invalid" and g["timeout"] == "180"
    assert copies == {str(cert): "ca.pem"} and g["cert"] == "/etc/zeroserve-build/ca.pem"
    assert any("file:///opt/local/simple" in n for n in notes) and any("/opt/wheels" in n for n in notes)
    empty, none, _ = build_image.pip_config({})
    assert "index-url" not in empty["global"] and not none  # pip's own default index
