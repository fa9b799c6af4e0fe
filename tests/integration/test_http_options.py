"""`http_options` are validated in one place (HTTPOptions), whether given as a dict or as
`serve.HTTPOptions(...)`, with messages that say what to change; and a proxy that fails to
start for a reason other than a port in use is reported as what it is."""

from __future__ import annotations

import pytest

import actors
import serve
from serve._config import HTTPOptions

from ..conftest import free_port

pytestmark = pytest.mark.timeout(120)

BAD = [
    ({"location": "EveryNodes"}, "location must be 'HeadOnly', 'EveryNode' or 'NoServer', got 'EveryNodes' "
                                 "(did you mean 'EveryNode'?)"),
    ({"port": 0}, "port must be an integer in 1..65535, got 0 (0, an ephemeral port, is not supported"),
    ({"port": "8000"}, "port must be an integer in 1..65535, got '8000': give the number 8000"),
    ({"port": 65536}, "port must be an integer in 1..65535"),
    ({"port": True}, "port must be an integer in 1..65535"),
    ({"host": ""}, "host must be an IP address or host name"),
    ({"host": 5}, "host must be an IP address or host name"),
    ({"request_timeout_s": "5"}, "request_timeout_s must be a positive number of seconds or None for no limit "
                                 "(the default), got '5': give the number 5"),
    ({"request_timeout_s": 0}, "request_timeout_s must be a positive number of seconds"),
    ({"request_timeout_s": -1.5}, "request_timeout_s must be a positive number of seconds"),
    ({"request_timeout_s": float("inf")}, "request_timeout_s must be a positive number of seconds"),
    ({"request_timeout_s": float("nan")}, "request_timeout_s must be a positive number of seconds"),
    ({"keep_alive_timeout_s": "x"}, "keep_alive_timeout_s must be a positive number of seconds (default 5), got 'x'"),
    ({"keep_alive_timeout_s": 0}, "keep_alive_timeout_s must be a positive number of seconds"),
    ({"keep_alive_timeout_s": None}, "keep_alive_timeout_s must be a positive number of seconds"),
    ({"max_body_bytes": "1MB"}, "max_body_bytes must be a positive integer number of bytes"),
    ({"max_body_bytes": 0}, "max_body_bytes must be a positive integer number of bytes"),
    ({"max_body_bytes": 1.5}, "max_body_bytes must be a positive integer number of bytes"),
]


@pytest.mark.parametrize(("given", "message"), BAD)
def test_a_wrong_field_fails_the_same_way_as_a_dict_and_as_http_options(given, message) -> None:
    with pytest.raises(ValueError, match="http_options " + _literal(message)):
        HTTPOptions.of(given)
    with pytest.raises(ValueError, match="http_options " + _literal(message)):
        HTTPOptions(**given)


def test_the_review_example_is_refused() -> None:
    with pytest.raises(ValueError, match="http_options port must be"):
        HTTPOptions.of(HTTPOptions(location="EveryNodes", port=0, request_timeout_s="5"))
    with pytest.raises(ValueError, match="http_options location must be"):
        HTTPOptions.of(HTTPOptions(location="EveryNodes", port=8000, request_timeout_s="5"))
    with pytest.raises(ValueError, match="http_options request_timeout_s must be"):
        HTTPOptions.of(HTTPOptions(location="EveryNode", port=8000, request_timeout_s="5"))


def test_good_values_are_kept() -> None:
    opts = HTTPOptions.of({"host": "node", "port": 8123, "location": "EveryNode", "request_timeout_s": 2.5,
                           "max_body_bytes": 1024, "keep_alive_timeout_s": 0.5})
    assert (opts.host, opts.port, opts.location) == ("node", 8123, "EveryNode")
    assert (opts.request_timeout_s, opts.max_body_bytes, opts.keep_alive_timeout_s) == (2.5, 1024, 0.5)
    assert HTTPOptions.of({"request_timeout_s": None}).request_timeout_s is None  # no limit
    assert HTTPOptions.of({"request_timeout_s": 3}).request_timeout_s == 3
    defaults = HTTPOptions()
    assert (defaults.host, defaults.location, defaults.request_timeout_s, defaults.max_body_bytes,
            defaults.keep_alive_timeout_s) == ("127.0.0.1", "HeadOnly", None, 100 * 1024 * 1024, 5)


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def test_a_proxy_that_cannot_start_is_not_reported_as_a_port_in_use(cluster) -> None:
    """192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails with
    'Cannot assign requested address', which no other port would fix."""
    port = free_port()
    with pytest.raises(RuntimeError) as info:
        serve.start(http_options={"host": "192.0.2.1", "port": port})
    text = str(info.value)
    assert text.startswith("the HTTP proxy on node "), text
    assert "failed to start" in text and "assign requested address" in text.lower(), text
    assert "'192.0.2.1' is not an address of that node" in text, text
    assert "pick another http_options port" not in text and "in use" not in text, text
    with pytest.raises(ValueError):
        actors.get_actor("SERVE_CONTROLLER", namespace="serve")  # the failed start left no controller
