"""The unit tier: logic only. A test here that starts a process (a cluster, a driver, a
server) or connects the runtime fails: it belongs in tests/integration."""

from __future__ import annotations

import logging
from typing import Any

import psutil
import pytest

import actors


@pytest.fixture(autouse=True)
def no_processes() -> Any:
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    started = [p for p in me.children(recursive=True) if p.pid not in before]
    assert not started, f"a unit test started processes: {[' '.join(p.cmdline())[:120] for p in started]}"
    assert not actors.is_initialized(), "a unit test connected the runtime (actors.init): make it an integration test"


@pytest.fixture
def restore_root() -> Any:
    """The root logger's handlers and level as they were (for tests that configure logging)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
