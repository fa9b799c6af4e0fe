"""Imported by a node's fork server in tests/integration/test_preload.py: records who imported it."""

import os

IMPORTED_BY = os.getpid()
