"""The bot swarm (``callrt swarm``): many verified participants over pinned worker processes.

``SwarmRunner``/``run_swarm`` run one from Python; ``add_swarm_parser`` registers the command.
Imports are lazy: a worker process pins itself to its core before the media stack loads.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InvalidSwarmSpec": "signaling.swarm.errors",
    "Layout": "signaling.swarm.layout",
    "MediaSpec": "signaling.swarm.layout",
    "ReportError": "signaling.swarm.errors",
    "SwarmError": "signaling.swarm.errors",
    "SwarmOptions": "signaling.swarm.runner",
    "SwarmRunner": "signaling.swarm.runner",
    "Thresholds": "signaling.swarm.participant",
    "WorkerFailed": "signaling.swarm.errors",
    "add_swarm_parser": "signaling.swarm.cli",
    "merge": "signaling.swarm.report",
    "run_swarm": "signaling.swarm.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'signaling.swarm' has no attribute {name!r}")
