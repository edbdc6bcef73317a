"""Every figure of issue #10 beside its target: the rows the summary collects (`Targets`, written
to latest.json under `summary.targets`) and the table the report prints from them."""

from __future__ import annotations

from typing import Any

__all__ = ["Targets", "targets_table"]


class Targets:
    """The rows of the table: a figure, its value, its target (None: the figure is informational)
    and whether this run met it (None when it has no target or its phase did not run)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        item: str,
        figure: str,
        value: float | bool | None,
        op: str,
        target: float | bool | None,
        unit: str = "",
    ) -> None:
        met = None
        if value is not None and target is not None:
            met = {">=": value >= target, "<=": value <= target, "is": value == target}[op]
        self.rows.append(
            {
                "item": item,
                "figure": figure,
                "value": value,
                "op": op,
                "target": target,
                "unit": unit,
                "met": met,
            }
        )


def _shown(value: float | bool | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}"


def targets_table(summary: dict[str, Any]) -> list[str]:
    rows = [["#", "figure", "value", "target", "met"]]
    for row in summary.get("targets", []):
        unit = f" {row['unit']}" if row["unit"] else ""
        value = _shown(row["value"]) + (unit if row["value"] is not None else "")
        target = "-" if row["target"] is None else f"{row['op']} {_shown(row['target'])}{unit}"
        met = {True: "met", False: "NOT MET", None: "-"}[row["met"]]
        rows.append([row["item"], row["figure"], value, target, met])
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return [*lines, f"  targets met: {summary.get('targets_met', '-')}"]
