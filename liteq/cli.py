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
``cli_copy.py``     ``copy SRC DST``, moving a database to another file or engine
==================  ===========================================================

A new feature adds a ``cli_<feature>.py`` with its click commands (using
``open_db``, ``existing_queue`` and ``output_options``) and one ``add_command``
line below.
"""

from __future__ import annotations

import sys

import click

from .cli_base import cli, looks_only, writes
from .cli_copy import copy_command
from .cli_demo import demo, demo_step
from .cli_messages import ack, cancel, get, peek, put, retry, show
from .cli_ops import metrics_command, workers_command
from .cli_queues import dead, prune, purge, queue_group, vacuum
from .cli_schedule import schedule_demo, schedule_group, scheduler
from .cli_stats import stats
from .cli_topics import publish, subscribe, tail, topics, unsubscribe
from .cli_web import web_command
from .cli_worker import job, jobs, worker, worker_demo

__all__ = ["cli", "main"]

for command in (stats, peek, show, put, get, ack, retry, cancel, dead, purge, queue_group,
                prune, vacuum, topics, publish, subscribe, unsubscribe, tail, worker, jobs, job,
                schedule_group, scheduler, demo, copy_command, workers_command, metrics_command, web_command):
    cli.add_command(command)
demo_step(60)(worker_demo)
demo_step(70)(schedule_demo)

#: Commands that only look open the file read-only (an operator without write access
#: can run them); commands that write take --durability. The worker and a scheduler
#: given APP use the Database that APP's liteq.connect() made, with its durability.
LOOKS = ["stats", "peek", "show", "topics", "jobs", "job", "dead list", "schedule list",
         "schedule next", "schedule history", "workers", "metrics"]
WRITES = ["put", "get", "ack", "retry", "cancel", "purge", "prune", "vacuum", "publish",
          "subscribe", "unsubscribe", "tail", "dead redrive", "dead purge", "queue create",
          "queue config", "queue delete", "schedule add", "schedule rm", "schedule pause",
          "schedule resume", "schedule run", "scheduler", "copy"]


def _command(words: str) -> click.Command:
    command: click.Command = cli
    for word in words.split():
        assert isinstance(command, click.Group), words
        command = command.commands[word]
    return command


for words in LOOKS:
    looks_only(_command(words))
for words in WRITES:
    writes(_command(words), " With APP: the durability APP's connect() chose."
           if words == "scheduler" else "")


def main() -> None:
    """Entry point of the ``liteq`` console script (and ``python -m liteq``)."""
    try:
        cli(prog_name="liteq")
    except KeyboardInterrupt:
        sys.exit(130)
