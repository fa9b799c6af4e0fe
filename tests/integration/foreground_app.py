"""A deployment for the foreground-node tests (imported by replicas too: no side effects).

`GET /?s=SECONDS&marker=PATH` touches PATH (so a test knows the request reached the
replica), then takes SECONDS to answer."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import serve


@serve.deployment
class Slow:
    async def __call__(self, request) -> dict:
        marker = request.query_params.get("marker")
        if marker:
            Path(marker).touch()
        await asyncio.sleep(float(request.query_params.get("s", "0")))
        return {"pid": os.getpid(), "done": True}


app = Slow.bind()
