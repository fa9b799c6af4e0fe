"""A FastAPI app served by a deployment: unit conversion and summary statistics.

The app's routes are methods of the `Tools` deployment class (`@serve.ingress(app)`), so
they run in its replicas with `self`: path parameters (an enum, a float), query parameters
with bounds, a shared dependency, a pydantic request body with validation, response models,
HTTP errors, and the OpenAPI docs at `/tools/docs`.

    python examples/fastapi_app.py [--port 8000] [--once]
    curl 'http://127.0.0.1:8000/tools/convert/length/26.2?from_unit=mi&to_unit=km'
    curl -H 'content-type: application/json' -d '{"values": [2.5, 3, 4.5, 10]}' http://127.0.0.1:8000/tools/stats
    open http://127.0.0.1:8000/tools/docs

It deploys two replicas, sends a few requests (good and bad ones) over HTTP and prints
the answers, then serves until Ctrl-C; `--once` exits after the demonstration.
"""

from __future__ import annotations

import argparse
import enum
import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel, Field, FiniteFloat

import serve

app = FastAPI(title="zeroserve tools", version="1.0",
              description="Unit conversion and summary statistics, served by a zeroserve deployment.")


class Quantity(str, enum.Enum):
    length = "length"
    mass = "mass"
    temperature = "temperature"


# Factors to the base unit (metre, kilogram); temperatures convert through kelvin.
FACTORS = {
    Quantity.length: {"m": 1.0, "km": 1000.0, "cm": 0.01, "mm": 0.001, "mi": 1609.344, "yd": 0.9144, "ft": 0.3048,
                      "in": 0.0254},
    Quantity.mass: {"kg": 1.0, "g": 0.001, "t": 1000.0, "lb": 0.45359237, "oz": 0.028349523125},
}
TO_KELVIN = {"K": lambda v: v, "C": lambda v: v + 273.15, "F": lambda v: (v - 32) * 5 / 9 + 273.15}
FROM_KELVIN = {"K": lambda k: k, "C": lambda k: k - 273.15, "F": lambda k: (k - 273.15) * 9 / 5 + 32}


class Conversion(BaseModel):
    quantity: Quantity
    value: float
    from_unit: str
    to_unit: str
    result: float
    replica: str


class Sample(BaseModel):
    values: list[FiniteFloat] = Field(min_length=1, max_length=100_000, description="the numbers to summarise")
    label: str | None = Field(default=None, max_length=100)


class Summary(BaseModel):
    label: str | None
    count: int
    mean: float
    median: float
    stdev: float | None = Field(description="sample standard deviation; null for one value")
    min: float
    max: float


def rounding(digits: Annotated[int, Query(ge=0, le=12, description="decimal places of the answer")] = 6) -> int:
    return digits


@serve.deployment(route_prefix="/tools", num_replicas=2)
@serve.ingress(app)
class Tools:
    def __init__(self) -> None:
        self.replica = serve.get_replica_context().replica_tag
        self.units = {q.value: sorted(FACTORS.get(q, TO_KELVIN)) for q in Quantity}

    @app.get("/")
    def about(self) -> dict[str, Any]:
        """What this service converts, and which replica answered."""
        return {"service": "zeroserve tools", "units": self.units, "replica": self.replica}

    @app.get("/convert/{quantity}/{value}", response_model=Conversion)
    def convert(self, quantity: Quantity, value: float, from_unit: str, to_unit: str,
                digits: int = Depends(rounding)) -> Conversion:
        """Convert `value` of `quantity` from one unit to another."""
        for unit in (from_unit, to_unit):
            if unit not in self.units[quantity.value]:
                raise HTTPException(400, f"unknown {quantity.value} unit {unit!r}; "
                                         f"use one of {', '.join(self.units[quantity.value])}")
        if quantity is Quantity.temperature:
            kelvin = TO_KELVIN[from_unit](value)
            if kelvin < 0:
                raise HTTPException(400, f"{value} {from_unit} is below absolute zero")
            result = FROM_KELVIN[to_unit](kelvin)
        else:
            result = value * FACTORS[quantity][from_unit] / FACTORS[quantity][to_unit]
        return Conversion(quantity=quantity, value=value, from_unit=from_unit, to_unit=to_unit,
                          result=round(result, digits), replica=self.replica)

    @app.post("/stats", response_model=Summary)
    def stats(self, sample: Sample, digits: int = Depends(rounding)) -> Summary:
        """Count, mean, median, sample standard deviation, min and max of the values."""
        v = sample.values
        return Summary(label=sample.label, count=len(v), mean=round(statistics.fmean(v), digits),
                       median=round(statistics.median(v), digits),
                       stdev=round(statistics.stdev(v), digits) if len(v) > 1 else None,
                       min=min(v), max=max(v))


tools = Tools.bind()


def request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw, status, kind = r.read(), r.status, r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        raw, status, kind = e.read(), e.code, e.headers.get("content-type", "")
    return status, json.loads(raw) if kind.startswith("application/json") else raw.decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="default 8000, or $ZEROSERVE_HTTP_PORT")
    parser.add_argument("--once", action="store_true", help="exit after the demonstration")
    args = parser.parse_args()

    t0 = time.perf_counter()
    port = args.port or serve.HTTPOptions().port
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(tools)
    base = f"http://127.0.0.1:{port}/tools"
    deadline = time.monotonic() + 30
    while True:  # the proxy learns the route within moments of the deploy
        try:
            status, answer = request("GET", base)
            if status == 200 or time.monotonic() > deadline:
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)
    print(f"deployed in {time.perf_counter() - t0:.1f}s; GET {base} -> {status} {answer}")

    for method, path, body in (
        ("GET", "/convert/length/26.2?from_unit=mi&to_unit=km&digits=3", None),
        ("GET", "/convert/temperature/98.6?from_unit=F&to_unit=C&digits=2", None),
        ("GET", "/convert/temperature/-500?from_unit=C&to_unit=K", None),
        ("GET", "/convert/length/1?from_unit=mi&to_unit=parsec", None),
        ("GET", "/convert/volume/1?from_unit=l&to_unit=ml", None),
        ("POST", "/stats?digits=3", {"values": [2.5, 3, 4.5, 10], "label": "latencies"}),
        ("POST", "/stats", {"values": []}),
    ):
        status, answer = request(method, base + path, body)
        if isinstance(answer, dict):
            answer.pop("replica", None)
            if status == 422:  # show which field failed validation, not the whole report
                answer = [(e["loc"], e["msg"]) for e in answer["detail"]]
        shown = f" {json.dumps(body)}" if body is not None else ""
        print(f"{method} {base}{path}{shown} -> {status} {answer}")

    status, page = request("GET", f"{base}/docs")
    _, schema = request("GET", f"{base}/openapi.json")
    ui = "Swagger UI" if "swagger-ui" in page else "not the Swagger UI"
    print(f"GET {base}/docs -> {status} ({ui}; its schema at /tools/openapi.json lists {', '.join(schema['paths'])})")
    print(f"\nServing on {base} - try:\n"
          f"    curl '{base}/convert/length/26.2?from_unit=mi&to_unit=km'\n"
          f"    curl -H 'content-type: application/json' -d '{{\"values\": [2.5, 3, 4.5, 10]}}' {base}/stats\n"
          f"    open {base}/docs\nCtrl-C to stop.", flush=True)
    if not args.once:
        threading.Event().wait()  # until Ctrl-C


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # whenever it comes, even mid-deploy
        pass
    finally:
        serve.shutdown()
