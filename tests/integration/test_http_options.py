"""`http_options` are validated in one place (HTTPOptions, a strict pydantic model), whether
given as a dict or as `serve.HTTPOptions(...)`, with messages that name the field and say what
to change; and a proxy that fails to start for a reason other than a port in use is reported
as what it is."""

from __future__ import annotations

import pytest

import actors
import serve
from serve._config import HTTPOptions

from ..conftest import free_port

pytestmark = pytest.mark.timeout(120)

# (given, TypeError for a wrong type (also a ValueError, as before) or ValueError for a wrong value, message)
BAD = [
    ({"location": "EveryNodes"}, ValueError,
     "location must be 'HeadOnly', 'EveryNode' or 'NoServer', got 'EveryNodes' "
                                    "(did you mean 'EveryNode'?)"),
    ({"port": 0}, ValueError,
     "port must be an integer in 1..65535, got 0 (0, an ephemeral port, is not supported"),
    ({"port": "8000"}, TypeError,
     "port must be an integer in 1..65535, got '8000': give the number 8000, not the string"),
    ({"port": 8000.0}, TypeError,
     "port must be an integer in 1..65535, got 8000.0"),
    ({"port": 65536}, ValueError,
     "port must be an integer in 1..65535"),
    ({"port": True}, TypeError,
     "port must be an integer in 1..65535"),
    ({"host": ""}, ValueError,
     "host must be an IP address or host name"),
    ({"host": 5}, TypeError,
     "host must be an IP address or host name"),
    ({"request_timeout_s": "5"}, TypeError,
     "request_timeout_s must be a positive number of seconds or None for no "
                                    "limit (the default), got '5': give the number 5"),
    ({"request_timeout_s": 0}, ValueError,
     "request_timeout_s must be a positive number of seconds"),
    ({"request_timeout_s": -1.5}, ValueError,
     "request_timeout_s must be a positive number of seconds"),
    ({"request_timeout_s": float("inf")}, ValueError,
     "request_timeout_s must be a positive number of seconds"),
    ({"request_timeout_s": float("nan")}, ValueError,
     "request_timeout_s must be a positive number of seconds"),
    ({"keep_alive_timeout_s": "x"}, TypeError,
     "keep_alive_timeout_s must be a positive number of seconds (default 5), got 'x'"),
    ({"keep_alive_timeout_s": 0}, ValueError,
     "keep_alive_timeout_s must be a positive number of seconds"),
    ({"keep_alive_timeout_s": None}, TypeError,
     "keep_alive_timeout_s must be a positive number of seconds"),
    ({"body_idle_timeout_s": "x"}, TypeError,
     "body_idle_timeout_s must be a positive number of seconds (default 30), got 'x'"),
    ({"body_idle_timeout_s": 0}, ValueError,
     "body_idle_timeout_s must be a positive number of seconds"),
    ({"body_idle_timeout_s": float("inf")}, ValueError,
     "body_idle_timeout_s must be a positive number of seconds"),
    ({"max_body_bytes": "1MB"}, TypeError,
     "max_body_bytes must be a positive integer number of bytes"),
    ({"max_body_bytes": 0}, ValueError,
     "max_body_bytes must be a positive integer number of bytes (default 104857600)"),
    ({"max_body_bytes": 1.5}, TypeError,
     "max_body_bytes must be a positive integer number of bytes"),
    ({"root_path": 5}, TypeError,
     "root_path must be '' or a path starting with '/', such as '/serve', got 5"),
]


@pytest.mark.parametrize(("given", "error", "message"), BAD)
def test_a_wrong_field_fails_the_same_way_as_a_dict_and_as_http_options(given, error, message) -> None:
    with pytest.raises(ValueError, match="^http_options." + _literal(message)) as dict_error:
        HTTPOptions.of(given)
    with pytest.raises(ValueError, match="^http_options." + _literal(message)) as direct_error:
        HTTPOptions(**given)
    assert str(dict_error.value) == str(direct_error.value)
    assert isinstance(dict_error.value, TypeError) is (error is TypeError), repr(dict_error.value)


def test_every_wrong_field_is_listed_at_once() -> None:
    with pytest.raises(ValueError) as e:
        HTTPOptions(location="EveryNodes", port=0, request_timeout_s="5", colour="red")
    assert [line.split(" ")[0] for line in str(e.value).splitlines()] == [
        "http_options.port", "http_options.location", "http_options.request_timeout_s", "unknown"]
    assert str(e.value).splitlines()[-1].startswith("unknown http_options 'colour'; valid ones are host, port,")


def test_the_review_example_is_refused() -> None:
    with pytest.raises(ValueError, match=r"http_options\.port must be"):
        HTTPOptions.of(HTTPOptions(location="EveryNodes", port=0, request_timeout_s="5"))
    with pytest.raises(ValueError, match=r"http_options\.location must be"):
        HTTPOptions.of(HTTPOptions(location="EveryNodes", port=8000, request_timeout_s="5"))
    with pytest.raises(ValueError, match=r"http_options\.request_timeout_s must be"):
        HTTPOptions.of(HTTPOptions(location="EveryNode", port=8000, request_timeout_s="5"))


def test_good_values_are_kept() -> None:
    opts = HTTPOptions.of({"host": "node", "port": 8123, "location": "EveryNode", "request_timeout_s": 2.5,
                           "max_body_bytes": 1024, "keep_alive_timeout_s": 0.5, "body_idle_timeout_s": 2.5})
    assert (opts.host, opts.port, opts.location) == ("node", 8123, "EveryNode")
    assert (opts.request_timeout_s, opts.max_body_bytes, opts.keep_alive_timeout_s) == (2.5, 1024, 0.5)
    assert (opts.body_idle_timeout_s, HTTPOptions().body_idle_timeout_s, HTTPOptions().body_timeout_s) == (2.5, 30, 120)
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
