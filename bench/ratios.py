"""Print liteq's speed as a ratio of raw apsw's, per group, from pytest-benchmark JSON.

Uses the mean time per round (total throughput, checkpoints included), not the
median, which would hide the WAL checkpoints that every ~1,000 pages cost.

    .venv/bin/python bench/ratios.py bench/results/core.json
"""

from __future__ import annotations

import json
import sys

BATCHED = {"put_batch": 100, "get_ack_batch": 100}


def main(path: str) -> None:
    data = json.load(open(path))
    groups: dict[str, dict[str, float]] = {}
    for b in data["benchmarks"]:
        system = b["name"].rsplit("_", 1)[1]
        groups.setdefault(b["group"], {})[system] = b["stats"]["mean"]
    print(f"{'workload':<16}{'raw msgs/s':>12}{'liteq msgs/s':>14}{'liteq/raw':>11}")
    for group, times in groups.items():
        per = BATCHED.get(group, 1)
        raw = per / times["raw"]
        lq = per / times["liteq"]
        print(f"{group:<16}{raw:>12,.0f}{lq:>14,.0f}{lq / raw:>10.0%}")


if __name__ == "__main__":
    main(sys.argv[1])
