"""``python -m benchmarks [NAME ...] [--quick] [--json DIR]``: run benchmark programs by name.

Each program is a module with ``main(argv) -> int``, imported only when run; a registered
program whose module does not exist yet is skipped with a message. ``--json DIR`` writes
``DIR/NAME.json`` per program. ``callrt bench`` calls ``main`` here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

REGISTRY: dict[str, str] = {
    "pipeline": "benchmarks.pipeline",
    "devices": "benchmarks.devices",
    "coordinator": "benchmarks.coordinator",
    "e2e": "benchmarks.e2e",
    "soak": "benchmarks.soak",
    "browser": "benchmarks.browser",
    "swarm": "benchmarks.swarm",
    "idle": "benchmarks.idle",
}


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """Run the named programs (default: all registered); returns the worst exit code."""
    p = argparse.ArgumentParser(prog=prog, description="Run callrt benchmark programs.")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(REGISTRY)} (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny iteration counts")
    p.add_argument("--json", metavar="DIR", help="write DIR/NAME.json for each program")
    args = p.parse_args(argv)
    names = args.names or list(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(REGISTRY)}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).mkdir(parents=True, exist_ok=True)
    worst = 0
    for name in names:
        module = REGISTRY[name]
        if not _exists(module):
            print(f"skipping {name}: {module} does not exist yet", file=sys.stderr)
            continue
        sub: list[str] = []
        if args.quick:
            sub.append("--quick")
        if args.json:
            sub += ["--json", str(Path(args.json) / f"{name}.json")]
        rc = int(importlib.import_module(module).main(sub) or 0)
        worst = max(worst, rc)
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
