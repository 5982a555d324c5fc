"""The ``liteq`` command: look inside a queue database and act on it.

The command is assembled from one module per concern, so the file list shows its
shape:

==================  ===========================================================
``cli_base.py``     the root group, ``--db``, the error edge (``Error: ...`` and
                    the exit codes), shared parameter types, ``open_db``
``cli_output.py``   tables, ``--json``/``--nl`` (:func:`output_options`), safe
                    payloads
``cli_stats.py``    ``stats`` (``--watch``)
``cli_messages.py`` ``peek``, ``show``, ``put``, ``get``, ``ack``, ``retry``,
                    ``cancel``
``cli_queues.py``   ``dead``, ``purge``, ``queue``, ``prune``, ``vacuum``
``cli_topics.py``   ``topics``, ``publish``, ``subscribe``, ``unsubscribe``, ``tail``
``cli_worker.py``   ``worker``, ``jobs``, ``job``
``cli_schedule.py`` ``schedule ...``, ``scheduler``
``cli_demo.py``     ``demo``, a list of steps that later features extend
==================  ===========================================================

A new feature adds a ``cli_<feature>.py`` with its click commands (using
``open_db``, ``existing_queue`` and ``output_options``) and one ``add_command``
line below.
"""

from __future__ import annotations

import sys

from .cli_base import cli
from .cli_demo import demo, demo_step
from .cli_messages import ack, cancel, get, peek, put, retry, show
from .cli_queues import dead, prune, purge, queue_group, vacuum
from .cli_schedule import schedule_demo, schedule_group, scheduler
from .cli_stats import stats
from .cli_topics import publish, subscribe, tail, topics, unsubscribe
from .cli_worker import job, jobs, worker, worker_demo

__all__ = ["cli", "main"]

for command in (stats, peek, show, put, get, ack, retry, cancel, dead, purge, queue_group,
                prune, vacuum, topics, publish, subscribe, unsubscribe, tail, worker, jobs, job,
                schedule_group, scheduler, demo):
    cli.add_command(command)
demo_step(60)(worker_demo)
demo_step(70)(schedule_demo)


def main() -> None:
    """Entry point of the ``liteq`` console script (and ``python -m liteq``)."""
    try:
        cli(prog_name="liteq")
    except KeyboardInterrupt:
        sys.exit(130)
