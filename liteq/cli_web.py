"""``liteq web``: the dashboard (issue 21), served by the standard library."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from .cli_base import CliError, open_db
from .errors import InvalidArgument

__all__ = ["web_command"]


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--allow-actions", is_flag=True,
              help="Let the dashboard change things (redrive, purge, pause and run "
                   "schedules); without it the database is opened read-only.")
@click.option("--token", metavar="TOKEN", default=None, envvar="LITEQ_WEB_TOKEN",
              help="Every request must carry it: open the dashboard once with ?token=TOKEN "
                   "(a cookie keeps it), or send the X-Liteq-Token header. Also $LITEQ_WEB_TOKEN.")
def web_command(host: str, port: int, allow_actions: bool, token: str | None) -> None:
    """Serve the web dashboard until Ctrl-C or SIGTERM.

    Pages: the overview (every queue's counts, rates and charts), each queue's
    messages, messages and jobs, dead letters by error, schedules, topics, workers,
    and /metrics for Prometheus. Read-only unless --allow-actions; every action is a
    POST with a CSRF token.

    \b
    Examples:
      liteq web
      liteq web --allow-actions --port 9000
      liteq web --host 0.0.0.0 --token "$(openssl rand -hex 16)"
    """
    from .web import serve, shown_path  # the web package only when this command runs

    # Without --allow-actions nothing may write: the database is opened read-only
    # (SQLite mode=ro; PostgreSQL default_transaction_read_only), so a bug in a page
    # cannot change it either.
    db = open_db(read_only=not allow_actions)
    # Ctrl-C and SIGTERM set a flag the serving loop checks (see liteq.web.serve: an
    # exception raised by a signal handler mid-response would be swallowed).
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def ready(url: str) -> None:
        mode = "actions on" if allow_actions else "read-only"
        click.echo(f"liteq dashboard of {shown_path(db.path)} at {url} ({mode}; Ctrl-C to stop)", err=True)

    try:
        serve(db, host, port, allow_actions=allow_actions, token=token, ready=ready, stop=stop)
    except InvalidArgument as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    click.echo("liteq dashboard stopped", err=True)
