"""What `zeroserve start`/`status` say when the head does not answer a probe OK."""

from __future__ import annotations

import pytest

from actors.system import PROBE_BUSY, PROBE_OK, PROBE_REFUSED, PROBE_UNREACHABLE
from cluster._start import check_head_verdict
from cluster.exceptions import NodeStartError


def test_an_ok_head_passes() -> None:
    check_head_verdict(PROBE_OK, "10.0.0.1:6380")


@pytest.mark.parametrize(("verdict", "says"), [
    (PROBE_REFUSED, "refused this node's token: pass the token of its cluster (--token-file"),
    (PROBE_BUSY, "is busy or unresponsive"),
    (PROBE_UNREACHABLE, "cannot reach the head at 10.0.0.1:6380"),
])
def test_each_failed_verdict_says_what_to_do(verdict, says: str) -> None:
    with pytest.raises(NodeStartError) as err:
        check_head_verdict(verdict, "10.0.0.1:6380", "this node's")
    assert says in str(err.value)
