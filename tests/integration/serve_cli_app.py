"""A second application for the `zeroserve serve` tests, built by a builder from a config's `args`
(imported by the replicas too, so it has no side effects)."""

from __future__ import annotations

import time

import serve


@serve.deployment
class Greeter:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    def __call__(self, request: object) -> dict:
        return {"greeting": self.greeting}


def build(args: dict) -> serve.Application:
    return Greeter.bind(args["greeting"])


@serve.deployment
class Broken:
    def __init__(self) -> None:
        raise RuntimeError("the model file is missing")


broken = Broken.bind()


@serve.deployment
class Sluggish:
    """A constructor slower than the deploy deadlines the tests set (3 s)."""

    def __init__(self, seconds: float) -> None:
        time.sleep(seconds)

    def __call__(self, request: object) -> str:
        return "finally"


def sluggish(args: dict) -> serve.Application:
    return Sluggish.bind(float(args.get("seconds", 30)))
