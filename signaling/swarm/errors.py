"""Errors of the bot swarm.

    CallrtError                      (media.errors)
    └── SwarmError                   swarm_error
        ├── InvalidSwarmSpec         invalid_swarm_spec   400  (also ValueError: bad --calls/--video/--participants)
        ├── WorkerFailed             swarm_worker_failed  500  (a worker could not start or died before reporting)
        └── ReportError              swarm_bad_report     400  (unreadable, or not of this run)
"""

from __future__ import annotations

from media.errors import CallrtError


class SwarmError(CallrtError):
    """Base of every error ``callrt swarm`` raises."""

    code = "swarm_error"
    status = 500


class InvalidSwarmSpec(SwarmError, ValueError):
    """An option describes an impossible swarm (a participant range outside the layout, a bad ``WxH@fps``...)."""

    code = "invalid_swarm_spec"
    status = 400


class WorkerFailed(SwarmError):
    """A worker process could not start, or exited before it wrote its report."""

    code = "swarm_worker_failed"


class ReportError(SwarmError, ValueError):
    """A report is malformed, of an unknown version, or from another run than the others being merged."""

    code = "swarm_bad_report"
    status = 400
