"""Steady HTTP traffic for the fault drills, what each request did, and the drill table.

`Traffic` runs client threads, each with its own HTTP connection pool, sending GETs back to
back to the proxies until stopped, and records every request: start, end, status or error.
Each client prefers one proxy (client i: proxy i mod n) and, like a load balancer, tries
the next proxy when a connection is *refused* (nothing was sent, so the retry is safe);
any other error is the request's outcome. Every request has a client timeout, so none can
hang the run: one that reaches it is recorded as a failure (`ReadTimeout`).

`Verdict` judges the record against a fault window [t_fault, t_effect + NOTICE_S] (the
fault was made at t_fault and had taken effect, e.g. the killed process was gone, at
t_effect; NOTICE_S more is the time its peers take to see it, e.g. a dead process's
connections drop: a request sent to it before its proxy saw the drop may have reached
it, as far as anyone can tell, so it is in flight): a request *in flight at the fault* is
one that overlaps that window; every other request must succeed. `Row` is one line of the
drill table; `ROWS` collects them for the run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field

import httpx

__all__ = ["REQUEST_TIMEOUT_S", "ROWS", "Request", "Row", "Traffic", "Verdict", "record", "table"]

REQUEST_TIMEOUT_S = 10.0  # the clients' timeout: no request may take longer
NOTICE_S = 0.1  # after a fault took effect, the time its peers are given to see it (see Verdict)


@dataclass(frozen=True, slots=True)
class Request:
    start: float
    end: float
    status: int | None  # None: no HTTP answer (see `error`)
    error: str  # "" when an answer came
    proxy: str  # the proxy that answered (or the last one tried)
    body: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def latency(self) -> float:
        return self.end - self.start

    def overlaps(self, t0: float, t1: float) -> bool:
        return self.start <= t1 and self.end >= t0

    def brief(self, t0: float) -> str:
        what = f"{self.status}" if self.status is not None else self.error
        return f"[{self.start - t0:+.2f}s..{self.end - t0:+.2f}s {self.proxy} {what} {self.body[:80]!r}]"


class Traffic:
    """`clients` threads sending GET `path` to `proxies` (base URLs) back to back."""

    def __init__(self, proxies: list[str], path: str, clients: int = 6, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.proxies = list(proxies)
        self.path = path
        self.timeout = timeout
        self.done: list[Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True, name=f"traffic-{i}")
                         for i in range(clients)]
        for t in self._threads:
            t.start()

    def _run(self, i: int) -> None:
        n = len(self.proxies)
        order = [self.proxies[(i + k) % n] for k in range(n)]
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                start = time.monotonic()
                status, error, body, proxy = None, "", "", order[0]
                for proxy in order:
                    try:
                        r = client.get(proxy + self.path)
                        status, error, body = r.status_code, "", r.text[:200]
                    except httpx.ConnectError as e:  # refused: nothing sent, try the next proxy
                        error = f"ConnectError: {e}"
                        continue
                    except httpx.HTTPError as e:
                        error = f"{type(e).__name__}: {e}"
                    break
                with self._lock:
                    self.done.append(Request(start, time.monotonic(), status, error, proxy, body))

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self.done)

    def ok_since(self, t: float, proxy: str | None = None) -> int:
        """Successful requests started after `t` (through `proxy`, if given)."""
        return sum(1 for r in self.requests() if r.start > t and r.ok and (proxy is None or r.proxy == proxy))

    def stop(self) -> list[Request]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 30)
            assert not t.is_alive(), f"{t.name} did not finish its request within its timeout"
        return self.requests()


@dataclass
class Verdict:
    """The record of one drill judged against its fault window."""

    done: list[Request]
    t_fault: float
    t_effect: float
    t_whole: float
    failed: list[Request] = field(init=False)
    in_flight: list[Request] = field(init=False)
    late_failures: list[Request] = field(init=False)  # failed though not in flight at the fault
    timed_out: list[Request] = field(init=False)

    def __post_init__(self) -> None:
        self.failed = [r for r in self.done if not r.ok]
        window = (self.t_fault, self.t_effect + NOTICE_S)
        self.in_flight = [r for r in self.done if r.overlaps(*window)]
        self.late_failures = [r for r in self.failed if not r.overlaps(*window)]
        self.timed_out = [r for r in self.done if "Timeout" in r.error or r.latency >= REQUEST_TIMEOUT_S]

    @property
    def worst_latency(self) -> float:
        return max((r.latency for r in self.done), default=0.0)

    def describe(self, rs: list[Request], limit: int = 8) -> str:
        return " ".join(r.brief(self.t_fault) for r in rs[:limit]) + (f" ... ({len(rs)} in all)" if len(rs) > limit else "")


@dataclass(frozen=True)
class Row:
    """One line of the drill table."""

    fault: str
    requests: int
    failures: int
    in_flight: int
    worst_latency_s: float
    recovery_s: float
    bound_s: float
    note: str = ""


ROWS: list[Row] = []


def record(row: Row) -> None:
    """Add `row` to the table (and to $ZEROSERVE_DRILLS_JSON, one JSON object a line)."""
    ROWS.append(row)
    path = os.environ.get("ZEROSERVE_DRILLS_JSON")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(asdict(row)) + "\n")
    print("\n" + table([row]))


def table(rows: list[Row]) -> str:
    """The drill table as Markdown."""
    lines = ["| fault | requests | failures | in flight at the fault | worst latency | recovery (bound) | note |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.fault} | {r.requests} | {r.failures} | {r.in_flight} | {r.worst_latency_s * 1000:.0f} ms "
                     f"| {r.recovery_s:.1f} s (≤ {r.bound_s:g} s) | {r.note} |")
    return "\n".join(lines)
