"""Messages between agents and the head.

They are defined in `actors.messages`, beside the runtime's other control-plane messages,
because the runtime's typed head client (`Runtime.head`) carries them; this module names
them for the cluster's own code (and for head state files written before they moved).
"""

from __future__ import annotations

from actors.messages import NodeRegistration, WorkerExit

__all__ = ["NodeRegistration", "WorkerExit"]
