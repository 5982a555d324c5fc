"""``python manage.py liteq_worker``: run the Django tasks of a liteq backend."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from liteq.cli_worker import setup_logging, start_scheduler
from liteq.errors import LiteqError
from liteq.worker import DEFAULT_GRACE, POOLS, Worker

from ...worker import prepare


class Command(BaseCommand):
    help = ("Run the tasks of a liteq task backend until stopped. SIGTERM or Ctrl-C stops "
            "claiming and lets running tasks finish for --grace seconds, then releases them "
            "for another worker; a second signal stops now. "
            "Example: python manage.py liteq_worker --queues emails,default --concurrency 8")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backend", default="default",
                            help="The TASKS alias to serve (default: default).")
        parser.add_argument("--queues", "-Q", metavar="A,B",
                            help="Queues to serve, most preferred first (default: the "
                                 "backend's QUEUES).")
        parser.add_argument("--concurrency", "-c", type=int, metavar="N",
                            help="Tasks run at once (default: 4 threads, or one process "
                                 "per CPU).")
        parser.add_argument("--pool", choices=POOLS, default="thread",
                            help="Threads, or child processes (hard timeouts; CPU-bound "
                                 "tasks). Default: thread.")
        parser.add_argument("--grace", type=float, default=DEFAULT_GRACE, metavar="SECONDS",
                            help=f"After SIGTERM/SIGINT, how long running tasks may finish "
                                 f"(default: {DEFAULT_GRACE:g}).")
        parser.add_argument("--burst", action="store_true", help="Exit once no task is due.")
        parser.add_argument("--scheduler", action="store_true",
                            help="Also fire due schedules (the backend's OPTIONS['schedules']).")
        parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                            default="info", help="Default: info.")

    def handle(self, *args: Any, **options: Any) -> None:
        # Django's autoreloader is never involved: it belongs to runserver alone.
        setup_logging(options["log_level"], False)
        queues = options["queues"]
        names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
        try:
            prepared = prepare(options["backend"])
            worker = Worker(prepared.db, names or prepared.queues,
                            concurrency=options["concurrency"], pool=options["pool"],
                            grace=options["grace"], burst=options["burst"],
                            hooks=prepared.hooks)
            stop = start_scheduler(prepared.db, options["pool"]) if options["scheduler"] \
                else None
            try:
                worker.run()
            finally:
                if stop is not None:
                    stop()
        except LiteqError as exc:
            raise CommandError(str(exc)) from None
