"""Checked values for ``callrt`` options: argparse ``type=`` functions and the parsers behind them.

A malformed or out-of-range value is an argparse error (the usage line, then
``callrt CMD: error: argument --OPTION: ...``, exit status 2), never a traceback. The
parsers that other code needs too (``parse_resolution``) raise ``InvalidRequest`` instead.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from signaling.errors import InvalidRequest

MIN_WIDTH, MIN_HEIGHT = 32, 16
"""The smallest frame the test pattern can draw its frame index into."""
MAX_WIDTH, MAX_HEIGHT = 3840, 2160
"""4K, as ``callrt swarm --video`` allows."""

_RESOLUTION_RE = re.compile(r"^(\d+)x(\d+)$", re.ASCII)


def size_problem(width: int, height: int) -> str | None:
    """Why ``width`` x ``height`` is not a video size callrt sends (even, 32..3840 x 16..2160), or None.

    The one rule behind ``--resolution``, ``callrt bot --video pattern:WxH`` and ``callrt swarm --video``."""
    if width % 2 or height % 2 or not (MIN_WIDTH <= width <= MAX_WIDTH and MIN_HEIGHT <= height <= MAX_HEIGHT):
        return f"width and height must be even, {MIN_WIDTH}..{MAX_WIDTH} x {MIN_HEIGHT}..{MAX_HEIGHT}"
    return None


def parse_resolution(text: str) -> tuple[int, int]:
    """``WxH`` → ``(width, height)``: even integers within 32..3840 x 16..2160, else ``InvalidRequest``."""
    m = _RESOLUTION_RE.match(text.strip().lower())
    if not m:
        raise InvalidRequest(f"resolution {text!r}: expected WxH, e.g. 640x480")
    width, height = int(m.group(1)), int(m.group(2))
    problem = size_problem(width, height)
    if problem:
        raise InvalidRequest(f"resolution {text!r}: {problem}")
    return width, height


def resolution(text: str) -> str:
    """``--resolution WxH``: the checked size, written ``640x480``."""
    try:
        width, height = parse_resolution(text)
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return f"{width}x{height}"


def _named(check: Callable[[str], Any], what: str) -> None:
    check.__name__ = what  # argparse names the type in some of its messages


def number(minimum: float, *, strict: bool = False, maximum: float | None = None) -> Callable[[str], float]:
    """A finite float ``>= minimum`` (``> minimum`` when ``strict``) and ``<= maximum``."""
    what = f"a number {'>' if strict else '>='} {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if (not math.isfinite(value) or value < minimum or (strict and value == minimum)
                or (maximum is not None and value > maximum)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    _named(check, what)
    return check


def integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An integer ``>= minimum`` and ``<= maximum``."""
    what = f"an integer {minimum}..{maximum}" if maximum is not None else f"an integer >= {minimum}"

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    _named(check, what)
    return check


positive = number(0, strict=True)
"""Seconds, intervals, rates: a finite number > 0."""
non_negative = number(0)
"""A finite number >= 0 (0 usually meaning 'off' or 'no limit')."""
fraction = number(0, maximum=1)
"""A share in [0, 1]."""
port = integer(1, 65535)
"""A TCP port."""


def json_object(text: str) -> dict[str, Any]:
    """``--custom '{"color": "blue"}'``: a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, e.g. '{{\"color\": \"blue\"}}': {exc}") from None
    if not isinstance(value, dict):
        kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")
        raise argparse.ArgumentTypeError(f"expected a JSON object, e.g. '{{\"color\": \"blue\"}}', got a JSON {kind}")
    return value


def iso_time(text: str) -> datetime:
    """``--starts-at 2025-01-31T18:00:00+00:00``: an ISO 8601 time."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time, e.g. 2025-01-31T18:00:00+00:00, "
                                         f"got {text!r}") from None
