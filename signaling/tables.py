"""CLI output: plain-text tables (CLI and demo) and the error line every command prints."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from media.errors import CallrtError


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Left-aligned columns with a dashed rule under the header."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_error(prog: str, exc: CallrtError, as_json: bool) -> int:
    """Report a typed error as every command does: ``{"error": {...}}`` on stdout with ``--json``,
    else one line on stderr; returns the exit status, 2."""
    if as_json:
        print(json.dumps({"error": exc.to_dict()}))
    else:
        print(f"{prog}: error [{exc.code}]: {exc.message}", file=sys.stderr)
    return 2
