"""Serving the dashboard with the standard library (``liteq web``): ``wsgiref``'s server,
one request at a time on one thread (so one database connection), which a dashboard
that a few people look at needs and nothing more."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..database import Database
from ..errors import InvalidArgument
from .app import app

__all__ = ["is_local", "make", "serve"]


def is_local(host: str) -> bool:
    """Whether *host* is a loopback address (127.0.0.0/8, ::1) or ``localhost``: a
    bind that no other machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass


class _Server6(WSGIServer):
    address_family = socket.AF_INET6


def make(db: Database, host: str = "127.0.0.1", port: int = 8765, *,
         allow_actions: bool = False, token: str | None = None) -> WSGIServer:
    """A bound server of *db*'s dashboard (port 0: any free port; ``server_port`` says
    which). A non-local *host* needs a *token* (InvalidArgument otherwise)."""
    if not is_local(host) and not token:
        raise InvalidArgument(
            f"--host {host} can be reached from other machines: give --token TOKEN so that "
            f"only people who know it get in (or bind 127.0.0.1 and use an SSH tunnel)")
    cls = _Server6 if ":" in host else WSGIServer
    return make_server(host.strip("[]"), port, app(db, allow_actions=allow_actions, token=token),
                       server_class=cls, handler_class=_QuietHandler)


def serve(db: Database, host: str = "127.0.0.1", port: int = 8765, *,
          allow_actions: bool = False, token: str | None = None,
          ready: Callable[[str], None] | None = None,
          stop: threading.Event | None = None) -> None:
    """Serve the dashboard until *stop* is set (checked at least every half second), or
    for ever; *ready* gets its URL once it listens.

    A signal handler should set *stop* rather than raise: wsgiref's request handler
    catches every exception (KeyboardInterrupt too) while it finishes a response, so an
    exception raised there by a signal would be swallowed and the server go on."""
    server = make(db, host, port, allow_actions=allow_actions, token=token)
    try:
        if ready is not None:
            shown = f"[{host}]" if ":" in host else host
            ready(f"http://{shown}:{server.server_port}/")
        if stop is None:
            server.serve_forever(poll_interval=0.5)
            return
        server.timeout = 0.5
        while not stop.is_set():
            server.handle_request()  # one request, or none within the timeout
    finally:
        server.server_close()
