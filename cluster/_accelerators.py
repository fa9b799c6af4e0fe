"""Which GPU devices this machine's agent offers, and what kind they are.

`node_gpus(num_gpus)`: with `--num-gpus N` the devices are "0".."N-1" (as many as asked,
whatever the machine has: how tests run GPU placement on machines without one). Without
it they are detected: the ids in `CUDA_VISIBLE_DEVICES` (or `NVIDIA_VISIBLE_DEVICES`)
when set — an empty value or `none`/`void` means no device, `all` means every device
`nvidia-smi` lists — otherwise the devices `nvidia-smi -L` lists, otherwise none.
The accelerator type (`A100`, `T4`, `H100`, ...) is taken from the first device's name
when `nvidia-smi` runs; the node then offers the resource `accelerator_type:<type>`: 1,
as Ray does. Detection never fails the agent: a missing or broken `nvidia-smi` is "none".
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

__all__ = ["NodeGpus", "node_gpus", "accelerator_type_of"]

_SMI_TIMEOUT_S = 10.0
_LIST_LINE = re.compile(r"^GPU (\d+):\s*(.*?)\s*(\(UUID:.*\))?$")


@dataclass(frozen=True, slots=True)
class NodeGpus:
    ids: tuple[str, ...]
    accelerator_type: str | None = None

    def resources(self) -> dict[str, float]:
        """The node resources they make: GPU (their number) and the accelerator type."""
        out: dict[str, float] = {}
        if self.ids:
            out["GPU"] = float(len(self.ids))
            if self.accelerator_type:
                out[f"accelerator_type:{self.accelerator_type}"] = 1.0
        return out


def accelerator_type_of(name: str) -> str | None:
    """`NVIDIA A100-SXM4-40GB` -> `A100`, `Tesla T4` -> `T4`, `NVIDIA GeForce RTX 4090` -> `RTX`..."""
    words = [w for w in re.split(r"[\s-]+", name) if w and w.upper() not in ("NVIDIA", "TESLA", "GEFORCE", "QUADRO")]
    return words[0] if words else None


def _smi_list() -> list[tuple[str, str]]:
    """(index, name) of each device `nvidia-smi -L` lists; [] if it is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=_SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    found = []
    for line in out.stdout.splitlines():
        m = _LIST_LINE.match(line.strip())
        if m:
            found.append((m.group(1), m.group(2)))
    return found


def node_gpus(num_gpus: int | None, env: dict[str, str] | None = None) -> NodeGpus:
    """The devices this node offers (see the module's docstring)."""
    if num_gpus is not None:
        if num_gpus < 0:
            raise ValueError(f"--num-gpus must be >= 0, got {num_gpus}")
        return NodeGpus(tuple(str(i) for i in range(num_gpus)))
    env = dict(os.environ) if env is None else env
    listed = _smi_list()
    kind = accelerator_type_of(listed[0][1]) if listed else None
    for var in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        value = env.get(var)
        if value is None:
            continue
        value = value.strip()
        if value.lower() == "all":
            return NodeGpus(tuple(i for i, _ in listed), kind)
        if value == "" or value.lower() in ("none", "void", "nodevfiles"):
            return NodeGpus(())
        return NodeGpus(tuple(v.strip() for v in value.split(",") if v.strip()), kind)
    return NodeGpus(tuple(i for i, _ in listed), kind)
