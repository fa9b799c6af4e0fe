"""The text of a request's log line ("access line") and of a log line's time, wherever rendered.

A serving process queues one record per request (a tuple: RECORD names its fields) and
renders nothing on its request path. The line is rendered where the file is written: by the
node's agent, to which the process ships its batches (`_log_ship`), or by the process's own
log flush when it has no agent. Both use `render_text`, so a line reads the same either
way:

    2026-12-05 21:59:45,123 INFO <name> <id> <request id> serve.access: GET /route 200 1.2ms

`mid` (" INFO <name> <id> ") and `tail` (" serve.access: ") are the writer's (its
`LineSpec`); items of a batch that are text already (other log records) pass unchanged.
Costs (in a loop): about 1 us per line; the time text is cached per millisecond, the
latency text comes from a table.
"""

from __future__ import annotations

import time

__all__ = ["RECORD", "LineSpec", "asctime", "render_text"]

# A request's record: (time, method, what, status, latency_ms, request_id, route, app, extra, line).
# `extra` is its owner's (for its metrics), `line` False: counted, but no line written.
RECORD = ("time", "method", "what", "status", "latency_ms", "request_id", "route", "app", "extra", "line")
# The (mid, tail) around a line's request id: see the module docstring.
LineSpec = tuple[str, str]
_DASH = "-"

_time_cache = (-1, "", -1, "")  # (ms, its text, second, its text): one tuple, so threads never see half an update
_MS_TEXT = tuple(f",{ms:03d}" for ms in range(1000))  # a table: formatting ",{ms:03d}" costs 5 times more
# "12.3ms\n" for a latency's tenths of a millisecond below 100 ms, as `f"{latency_ms:.1f}ms\n"`
# writes it: formatting a float with a precision was half of an access line's cost. Rounding
# `latency_ms * 10` agrees with it except where the product is a tie (x.5): the product's
# rounding never crosses a tie, so those, and only those, are formatted.
_LATENCY_TEXTS = 1000
_LATENCY_TEXT = tuple(f"{tenths // 10}.{tenths % 10}ms\n" for tenths in range(_LATENCY_TEXTS))


def asctime(t: float) -> str:
    """`2026-12-05 21:59:45,123` (local time), cached per millisecond (and its second's text)."""
    ms = int(t * 1000)
    cached_ms, text, sec, sec_text = _time_cache
    if ms != cached_ms:
        return _asctime_of(ms, sec, sec_text)
    return text


def _asctime_of(ms: int, sec: int, sec_text: str) -> str:
    global _time_cache
    s = ms // 1000
    if s != sec:
        sec, sec_text = s, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s))
    text = sec_text + _MS_TEXT[ms % 1000]
    _time_cache = (ms, text, sec, sec_text)
    return text


def render_text(items: list, spec: LineSpec) -> list[str]:
    """The lines of a batch: text items as they are, each record's access line (none for a
    record whose `line` is False). One loop for the batch: a call per record cost more than
    its line."""
    mid, tail = spec
    latency_text = _LATENCY_TEXT
    lines: list[str] = []
    add = lines.append
    last_ms, head = -1, ""
    for item in items:
        if isinstance(item, str):
            add(item)
            continue
        t, method, what, status, latency_ms, request_id, _route, _app, _extra, line = item
        if line:
            ms = int(t * 1000)
            if ms != last_ms:  # most records of a batch share their millisecond with the one before
                last_ms, head = ms, asctime(t) + mid
            scaled = latency_ms * 10
            tenths = round(scaled)
            if tenths < _LATENCY_TEXTS and abs(scaled - tenths) != 0.5:
                latency = latency_text[tenths]
            else:
                latency = f"{latency_ms:.1f}ms\n"
            add(f"{head}{request_id or _DASH}{tail}{method} {what} {status} {latency}")
    return lines
