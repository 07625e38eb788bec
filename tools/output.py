"""Rendering of listings: aligned tables for people, JSON and YAML for scripts.

Rows are flat dicts; ``columns`` maps a table header to a row key. JSON output is
a stable contract (documented in the README): a list of the row dicts.
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

FORMATS = ("table", "json", "yaml")


def render(rows: Sequence[dict], columns: Sequence[tuple[str, str]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if fmt == "yaml":
        return to_yaml(rows)
    return table(rows, columns)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def table(rows: Iterable[dict], columns: Sequence[tuple[str, str]]) -> str:
    cells = [[h for h, _k in columns]] + [[_cell(r.get(k)) for _h, k in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _yaml_scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value)    # JSON is YAML's flow style (a connector's config)
    return json.dumps(str(value))   # a JSON string is a valid YAML scalar


def to_yaml(rows: Sequence[dict]) -> str:
    if not rows:
        return "[]"
    lines = []
    for row in rows:
        first = True
        for key, value in row.items():
            lines.append(("- " if first else "  ") + f"{key}: {_yaml_scalar(value)}")
            first = False
    return "\n".join(lines)
