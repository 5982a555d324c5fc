"""Publish throughput with 1, 10 and 1,000 subscriptions.

    python bench/bench_topic.py [--n 5000]

Each row publishes N messages one transaction each (durability normal) to a topic
with the given subscriptions, on a fresh file. "1 of 1000" has one matching
subscription among 1,000 (999 never match): routing cost must not grow with
subscriptions that do not match. "10 of 10" delivers ten copies of each message.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import liteq


def run(n: int, subs: int, matching: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        db = liteq.connect(os.path.join(tmp, "b.db"))
        t = db.topic("bench")
        for i in range(subs):
            pattern = "order.*.eu" if i < matching else f"other{i}.#"
            t.subscribe(f"s{i}", pattern=pattern)
        t.publish({"warm": True}, key="order.created.eu")
        start = time.perf_counter()
        for i in range(n):
            t.publish({"i": i, "body": "x" * 50}, key="order.created.eu")
        took = time.perf_counter() - start
        db.close()
        return n / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    print(f"{'subscriptions':<16}{'publishes/s':>14}{'deliveries/s':>14}")
    for subs, matching in [(1, 1), (10, 1), (10, 10), (1000, 1)]:
        rate = run(args.n, subs, matching)
        print(f"{f'{matching} of {subs}':<16}{rate:>14,.0f}{rate * matching:>14,.0f}")


if __name__ == "__main__":
    main()
