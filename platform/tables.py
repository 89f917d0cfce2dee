"""Plain-text tables for a command's output: one formatter for every table the platform prints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def cell(value: Any) -> str:
    """A table cell: floats to 4 significant digits, anything else as ``str``."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell and separated by `` | ``, a ``-+-`` rule under the header."""
    text = [[cell(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in text) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in text]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def format_fields(fields: Mapping[str, Any], indent: str = "  ") -> str:
    """``key  value`` lines, the values aligned."""
    width = max((len(k) for k in fields), default=0)
    return "\n".join(f"{indent}{k:<{width}}  {cell(v)}" for k, v in fields.items())
