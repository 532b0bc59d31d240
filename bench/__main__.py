"""``python -m bench [AREA]``: run every benchmark area, or one, and write its results."""

from __future__ import annotations

import asyncio
import importlib
import sys

AREAS = ("bus", "discovery", "health", "consensus", "decision", "fl")


def main(argv: list[str]) -> int:
    """Run the named areas (all when none is named)."""
    areas = argv or list(AREAS)
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        print(f"unknown area(s) {unknown}; known: {', '.join(AREAS)}", file=sys.stderr)
        return 2
    for area in areas:
        module = importlib.import_module(f"bench.{area}")
        report = asyncio.run(module.run())
        path = report.write()
        print(f"{area}: wrote {path}")
        for metric in report.metrics:
            print("   ", metric.as_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
