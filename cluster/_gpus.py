"""GPU devices: which of a node's devices an actor gets, and what share of each is free.

A node's devices are named by its agent (`"0"`, `"1"`, ... or the names in its
`CUDA_VISIBLE_DEVICES`). An actor asking for `num_gpus=g` holds:
- g < 1: a share g of one device — of the devices that fit, one not already shared by
  another actor of the same spread group (a deployment's replicas) if any, then the one
  with the least free room, so replicas of one deployment spread over a node's devices
  while fractions still pack onto the fewest devices and whole devices stay free for
  whole requests (ties: the device listed first);
- g >= 1 (a whole number): g devices entirely free, the first listed.

Invariants: a device's free share is in [0, 1]; no allocation ever takes more than a
device has free (a device is never over-committed); `release` of what `allocate` gave
restores the shares exactly (up to float rounding, absorbed by `_EPS` and clamping).
Pure functions over a `{device: free share}` dict; the head keeps one per node.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = ["GPU", "allocate", "release", "share_of", "fits_devices", "free_shares"]

GPU = "GPU"
_EPS = 1e-9


def share_of(amount: float) -> float:
    """What one request of `amount` GPUs takes from each device it gets."""
    return amount if amount < 1 else 1.0


def _pick(free: dict[str, float], amount: float, crowded: Collection[str] = ()) -> tuple[str, ...] | None:
    if amount <= 0:
        return ()
    if amount < 1 - _EPS:
        best: tuple[bool, float, int, str] | None = None
        for i, (device, room) in enumerate(free.items()):
            rank = (device in crowded, room, i)
            if room + _EPS >= amount and (best is None or rank < best[:3]):
                best = (*rank, device)
        return (best[3],) if best is not None else None
    wanted = round(amount)
    whole = [d for d, room in free.items() if room + _EPS >= 1.0]
    return tuple(whole[:wanted]) if len(whole) >= wanted else None


def fits_devices(free: dict[str, float], amount: float) -> bool:
    """Whether a request of `amount` GPUs fits the devices' free shares now."""
    return _pick(free, amount) is not None


def allocate(free: dict[str, float], amount: float, crowded: Collection[str] = ()) -> tuple[str, ...] | None:
    """Take `amount` GPUs from `free` (changed in place); the devices given, or None
    (and `free` untouched) if they do not fit. `crowded`: devices that already hold a share
    of an actor of the same spread group (a fraction goes elsewhere when it can)."""
    devices = _pick(free, amount, crowded)
    if devices is None:
        return None
    share = share_of(amount)
    for d in devices:
        free[d] = max(0.0, free[d] - share)
    return devices


def release(free: dict[str, float], devices: Iterable[str], amount: float) -> None:
    """Give back what `allocate(free, amount)` gave as `devices` (devices the node no
    longer has are ignored)."""
    share = share_of(amount)
    for d in devices:
        if d in free:
            free[d] = min(1.0, free[d] + share)


def free_shares(devices: Iterable[str], held: Iterable[tuple[tuple[str, ...], float]]) -> dict[str, float]:
    """The free share of each device, given what the actors on the node hold
    ((devices, amount) each)."""
    free = {d: 1.0 for d in devices}
    for ids, amount in held:
        share = share_of(amount)
        for d in ids:
            if d in free:
                free[d] = max(0.0, free[d] - share)
    return free
