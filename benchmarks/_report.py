"""Shared record format, progress line and output writers for every benchmark program.

A record is one measured figure next to the baseline measured in the same run:
``{name, resolution, value, unit, baseline, baseline_value, ratio}``.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil


@dataclass
class Record:
    """One benchmark figure and its same-run baseline."""

    name: str
    """What was measured, e.g. ``"BGR->I420 convert+wrap"``."""
    value: float
    """The measured figure."""
    unit: str
    """Unit of ``value`` and ``baseline_value`` (``ms``, ``fps``, ``%cpu``, ``ops/s``)."""
    resolution: str = ""
    """``WxH`` where relevant, else empty."""
    baseline: str = ""
    """What the baseline is (``aiortc default path``, ``raw libvpx``, ``memcpy``)."""
    baseline_value: float | None = None
    """The baseline measured in the same run, in ``unit``."""
    ratio: float | None = None
    """``value / baseline_value`` (computed when not given)."""
    extra: dict[str, object] = field(default_factory=dict)
    """Free-form details (p95, sample counts, ...)."""

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline_value:
            self.ratio = self.value / self.baseline_value


def machine_description() -> str:
    """A one-line description of the machine a run came from, for the README table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = psutil.virtual_memory().total / 2**30
    return f"{cpu}, {psutil.cpu_count()} cores, {mem_gib:.0f} GiB, Python {platform.python_version()}"


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def markdown_table(records: Sequence[Record], title: str = "") -> str:
    """Render records as a markdown table (the README format)."""
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines.append(f"Machine: {machine_description()}")
    lines.append("")
    lines.append("| measurement | resolution | value | baseline | baseline value | ratio |")
    lines.append("|---|---|---|---|---|---|")
    for r in records:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        lines.append(
            f"| {r.name} | {r.resolution or '-'} | {_fmt(r.value)} {r.unit} | {r.baseline or '-'} "
            f"| {_fmt(r.baseline_value)} {r.unit if r.baseline_value is not None else ''} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def write_json(records: Iterable[Record], path: str | Path) -> None:
    """Write records as a JSON list (one object per record) plus the machine line."""
    payload = {"machine": machine_description(), "records": [asdict(r) for r in records]}
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def configure_logging(verbose: int) -> None:
    """Warnings on stderr; each ``-v`` one level more (the benchmarks' shared ``--verbose``)."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def publish(records: Sequence[Record], title: str, json_path: str | None, markdown_path: str | None) -> str:
    """Print the markdown table of ``records`` and write the ``--json``/``--markdown`` files asked for."""
    table = markdown_table(records, title)
    print(table)
    if json_path:
        write_json(records, json_path)
    if markdown_path:
        Path(markdown_path).write_text(table, encoding="utf-8")
    return table


class Progress:
    """A single self-overwriting progress line on stderr (plain lines when not a TTY)."""

    def __init__(self, total: int, label: str = "") -> None:
        self.total = max(total, 1)
        self.done = 0
        self.label = label
        self._tty = sys.stderr.isatty()
        self._t0 = time.perf_counter()

    def step(self, what: str = "") -> None:
        self.done += 1
        elapsed = time.perf_counter() - self._t0
        msg = f"[{self.done}/{self.total}] {self.label} {what} ({elapsed:.1f}s)"
        if self._tty:
            sys.stderr.write("\r\033[K" + msg)
            if self.done >= self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(msg + "\n")
        sys.stderr.flush()


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)
