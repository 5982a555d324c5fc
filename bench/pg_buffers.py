"""Shared buffers one put and one ack touch on PostgreSQL (issue 17, the counted switch).

``EXPLAIN (ANALYZE, BUFFERS)`` of the statements themselves (``SQL_PUT_READY``,
``SQL_ACK_ONE``) on an unbounded and a bounded queue, 20 of each after a warm-up: the
median of the statement's shared-buffer hits, a figure that does not depend on the
machine's load. The statements are read from the liteq on ``sys.path``
(``PYTHONPATH=CHECKOUT`` for another one)::

    .venv/bin/python bench/pg_buffers.py postgresql://postgres@127.0.0.1:55462/postgres
"""

from __future__ import annotations

import re
import statistics
import sys
import uuid

import liteq
from liteq.backends.postgres import messages, queues_sql
from liteq.backends.postgres.schema import qualify


def main() -> None:
    url = sys.argv[1]
    schema = "buffers_" + uuid.uuid4().hex[:8]
    db = liteq.connect(url, schema=schema)

    def hits(sql: str, values: dict[str, str]) -> int:
        text = qualify(sql, schema).replace("%%", "%")
        for key, value in values.items():
            text = text.replace(f"%({key})s", value)
        for (line,) in db.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) " + text):
            found = re.match(r"\s*Buffers: shared hit=(\d+)", line)
            if found:
                return int(found.group(1))
        raise AssertionError("no buffer counts")

    try:
        for name, options in (("unbounded", {}), ("bounded", {"max_depth": 10**6})):
            q = db.queue(name, **options)
            q.put_many(list(range(100)))
            put = {"qid": str(q.id), "priority": "0", "now": "1.0", "payload": "'\\x01'::bytea"}
            puts = [hits(queues_sql.SQL_PUT_READY, put) for _ in range(20)]
            acks = []
            for _ in range(20):
                m = q.get()
                assert m is not None
                acks.append(hits(messages.SQL_ACK_ONE,
                                 {"id": str(m.id), "token": str(m.token), "qid": str(q.id)}))
            print(f"{name:10} put {statistics.median(puts):5.0f}  ack {statistics.median(acks):5.0f}"
                  " shared buffers (median of 20)")
    finally:
        db.execute(f'DROP SCHEMA "{schema}" CASCADE')
        db.close()


if __name__ == "__main__":
    main()
