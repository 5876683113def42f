#!/usr/bin/env python3
"""Prints criterion's median estimates as a Markdown table, for docs/benchmarks.md.

usage: benches/criterion_table.py [CRITERION_DIR] [GROUP_PREFIX...]

CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion, else target/criterion. Only the benchmarks of
the last run are read (each benchmark's new/estimates.json and new/sample.json). Columns: criterion's
median estimate; the fastest sample's time per iteration, which other load on a shared machine can only
make slower, so it is the steadier figure there; and the median as a share of 20 ms: the part of one
core a call spends on that step if it runs once per 20 ms packet.
"""

import json
import os
import sys
from pathlib import Path


def default_dir() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    return Path(target) / "criterion"


def human(nanoseconds: float) -> str:
    if nanoseconds >= 1000:
        return f"{nanoseconds / 1000:.2f} µs"
    return f"{nanoseconds:.1f} ns"


def main() -> None:
    args = sys.argv[1:]
    root = Path(args.pop(0)) if args and Path(args[0]).is_dir() else default_dir()
    prefixes = args
    rows = []
    for estimates in sorted(root.glob("**/new/estimates.json")):
        benchmark = json.loads((estimates.parent / "benchmark.json").read_text())
        name = benchmark["full_id"]
        if prefixes and not any(name.startswith(prefix) for prefix in prefixes):
            continue
        median = json.loads(estimates.read_text())["median"]["point_estimate"]
        sample = json.loads((estimates.parent / "sample.json").read_text())
        fastest = min(time / iters for time, iters in zip(sample["times"], sample["iters"]))
        rows.append((name, median, fastest))
    print("| benchmark | median | fastest sample | median as % of a core at one per 20 ms |")
    print("|---|---:|---:|---:|")
    for name, median, fastest in rows:
        print(f"| `{name}` | {human(median)} | {human(fastest)} | {median / 20e6 * 100:.3f} % |")


if __name__ == "__main__":
    main()
