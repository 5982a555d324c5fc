"""Every plan of liteq's PostgreSQL statements that reads an index of ``messages`` whole,
or the table itself, found in a server log written with auto_explain (issue 17,
session 15). Run the PostgreSQL tests against a server that logs every plan::

    initdb -D DIR -U postgres -A trust --no-sync
    pg_ctl -D DIR -w -l DIR/log -o "-k DIR -c listen_addresses=127.0.0.1 -p PORT \\
        -c fsync=off -c max_connections=300 -c shared_preload_libraries=auto_explain \\
        -c auto_explain.log_min_duration=0 -c auto_explain.log_nested_statements=on" start
    LITEQ_TEST_PG_URL=postgresql://postgres@127.0.0.1:PORT/postgres .venv/bin/python -m pytest -m postgres
    .venv/bin/python tools/pg_plan_audit.py DIR/log

(~6 min and ~350 MB of log for the suite.) An index scan whose condition leaves the
index's first column free reads the whole index (the B-tree cannot seek); numbers and
schema names are folded so that one statement counts once. The tests' own SQL shows
too (their sessions keep ``enable_seqscan`` on): read the statement before acting.
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Iterator

#: The first column of each index of messages (postgres/schema.py, obs_sql.py).
LEADING = {"messages_pkey": "id", "msg_ready": "qid", "msg_delayed": "qid",
           "msg_leased": "qid", "msg_finished": "qid", "msg_key": "qid",
           "msg_flow_leased": "flow", "msg_task": "qid"}


def entries(path: str) -> Iterator[str]:
    """The log's entries, each from its timestamped first line to the next one."""
    lines: list[str] = []
    with open(path, errors="replace") as f:
        for line in f:
            if re.match(r"\d{4}-\d\d-\d\d ", line) and lines:
                yield "".join(lines)
                lines = []
            lines.append(line)
    if lines:
        yield "".join(lines)


def folded(query: str) -> str:
    query = re.sub(r'"?liteq_t\d+"?', "S", query)
    return " ".join(re.sub(r"\d+(\.\d+)?", "N", query).split())[:160]


def audit(path: str) -> tuple[collections.Counter[tuple[str, ...]], collections.Counter[str]]:
    whole: collections.Counter[tuple[str, ...]] = collections.Counter()
    seq: collections.Counter[str] = collections.Counter()
    for entry in entries(path):
        if "plan:" not in entry or "Query Text:" not in entry:
            continue
        lines = entry.split("\n")
        start = next(i for i, line in enumerate(lines) if "Query Text:" in line)
        first = next((i for i in range(start, len(lines)) if "cost=" in lines[i]), len(lines))
        query = folded(" ".join(lines[start:first]).replace("Query Text:", ""))
        plan = [line.strip() for line in lines[first:]]
        for line, cond in zip(plan, plan[1:] + [""], strict=True):
            if "Seq Scan on messages" in line:
                seq[query] += 1
            m = re.search(r"Index (?:Only )?Scan(?: Backward)? using (\w+) on messages", line)
            if m and m.group(1) in LEADING:
                col = LEADING[m.group(1)]
                if "Index Cond" not in cond or not re.search(rf"\(({col}|\w+\.{col}) ", cond):
                    whole[(m.group(1), folded(cond)[:70], query)] += 1
    return whole, seq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", help="the server's log, written with auto_explain")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    whole, seq = audit(args.log)
    print("== index scans of messages that read the whole index (count, index, condition, statement)")
    for key, n in whole.most_common(args.top):
        print(n, *key, sep="  |  ")
    print("== sequential scans of messages (count, statement)")
    for query, n in seq.most_common(args.top):
        print(n, query, sep="  |  ")


if __name__ == "__main__":
    main()
