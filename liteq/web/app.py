"""The dashboard as a WSGI application: routing, the guards, and the answers.

``liteq.web.app(db)`` gives the app to mount in a web app of one's own (under any
prefix: links follow ``SCRIPT_NAME``), and ``liteq web`` serves it with the standard
library's ``wsgiref``. Pages are rendered on the server; the one small script adds
"select all", confirmations and the overview's refresh, and nothing needs it.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from ..database import Database
from ..errors import InvalidArgument, LiteqError
from ..metrics import CONTENT_TYPE, render
from . import views, views_ops
from .actions import ACTIONS
from .http import HTTPError, Request, Response
from .security import CSRF_COOKIE, SECURITY_HEADERS, TOKEN_COOKIE, Guard
from .templates import Page, h

__all__ = ["Dashboard", "app", "shown_path"]

StartResponse = Callable[..., Any]
_STATIC = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}


def app(db: Database, allow_actions: bool = False, token: str | None = None) -> Dashboard:
    """The dashboard of *db* as a WSGI application.

    Read-only unless *allow_actions* (then redrive, purge and the schedule controls
    work, each a POST with a CSRF token; *db* must then be open for writing). A
    dashboard without actions works on ``liteq.connect(path, read_only=True)``, as
    ``liteq web`` opens it. With *token* every request must carry it:
    ``?token=TOKEN`` once (it sets a cookie), the ``X-Liteq-Token`` header, or
    ``Authorization: Bearer TOKEN``. Mounted inside another app, that app's own
    authentication can stand in for the token.
    """
    return Dashboard(db, allow_actions=allow_actions, token=token)


def shown_path(path: str) -> str:
    """The database as the page shows it: a URL without its user and password."""
    if "://" in path:
        scheme, rest = path.split("://", 1)
        return f"{scheme}://{rest.rsplit('@', 1)[-1]}"
    return path


class Dashboard:
    """The WSGI application (see :func:`app`)."""

    def __init__(self, db: Database, *, allow_actions: bool = False,
                 token: str | None = None) -> None:
        if allow_actions and db.read_only:
            raise InvalidArgument("allow_actions=True needs a database open for writing: "
                                  "connect without read_only=True, or serve without actions")
        self.db = db
        self.allow_actions = allow_actions
        self.guard = Guard(token)
        self._static: dict[str, bytes] = {}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        req = Request(environ)
        set_cookies: list[str] = []
        try:
            resp = self._answer(req, set_cookies)
        except HTTPError as exc:
            resp = self._error(req, exc.status, exc.text)
        except LiteqError as exc:
            resp = self._error(req, "400 Bad Request", str(exc))
        except Exception:  # a bug: say so without the details, log them
            (environ.get("wsgi.errors") or sys.stderr).write(traceback.format_exc())
            resp = self._error(req, "500 Internal Server Error",
                               "the dashboard failed on this page (details in its log)")
        headers = resp.headers + SECURITY_HEADERS
        headers += [("Set-Cookie", c) for c in set_cookies]
        headers.append(("Content-Length", str(len(resp.body))))
        start_response(resp.status, headers)
        return [b"" if req.method == "HEAD" else resp.body]

    # -- the answer ------------------------------------------------------------------

    def _cookie(self, req: Request, name: str, value: str) -> str:
        return f"{name}={value}; Path={req.base or '/'}; HttpOnly; SameSite=Strict"

    def _answer(self, req: Request, set_cookies: list[str]) -> Response:
        if self.guard.token is not None and self.guard.token_from_query(req):
            set_cookies.append(self._cookie(req, TOKEN_COOKIE, req.arg("token")))
            rest = [(k, v) for k, v in parse_qsl(req.query_string) if k != "token"]
            return Response.redirect(req.base + quote(req.path, safe="/:@")
                                     + ("?" + urlencode(rest) if rest else ""))
        if not self.guard.allowed(req):
            raise HTTPError("401 Unauthorized",
                            "this dashboard needs its access token: open it once with "
                            "?token=TOKEN, or send the X-Liteq-Token header")
        path = req.path
        if path.startswith("/static/"):
            return self._asset(path[len("/static/"):])
        if req.method == "POST":
            if not path.startswith("/action/"):
                raise HTTPError("405 Method Not Allowed", "only actions are POSTed")
            return self._act(req, path[len("/action/"):])
        if req.method not in ("GET", "HEAD"):
            raise HTTPError("405 Method Not Allowed", f"{req.method} is not served here")
        if path == "/metrics":
            return Response(render(self.db), content_type=CONTENT_TYPE)
        nonce = req.cookies.get(CSRF_COOKIE, "")
        if not nonce or len(nonce) > 64:
            nonce = self.guard.new_nonce()
            set_cookies.append(self._cookie(req, CSRF_COOKIE, nonce))
        page = Page(req.base, req.here, self.allow_actions, self.guard.csrf_token(nonce),
                    notice=req.arg("done") or None, db_name=self._db_name())
        try:
            title, body, refresh = self._view(req, page, path)
        except views.Redirect as r:
            return Response.redirect(r.location)
        return Response(page.render(title, body, refresh=refresh))

    def _db_name(self) -> str:
        return shown_path(self.db.path)

    def _view(self, req: Request, page: Page, path: str) -> tuple[str, str, bool]:
        db = self.db
        parts = path.strip("/").split("/", 1)
        head, rest = parts[0], (parts[1] if len(parts) > 1 else "")
        if path == "/":
            return "Overview", views.overview(db, req, page), True
        if head == "queue" and rest:
            return f"Queue {rest}", views.queue_view(db, req, page, rest), False
        if head == "message" and rest.isdigit():
            return f"Message {int(rest)}", views.message_view(db, req, page, int(rest)), False
        if head == "dead" and not rest:
            return "Dead letters", views_ops.dead_index(db, req, page), False
        if head == "dead":
            return f"Dead letters of {rest}", views_ops.dead_view(db, req, page, rest), False
        if head == "schedules" and not rest:
            return "Schedules", views_ops.schedules_view(db, req, page), False
        if head == "schedule" and rest:
            return f"Schedule {rest}", views_ops.schedule_view(db, req, page, rest), False
        if head == "topics" and not rest:
            return "Topics", views_ops.topics_view(db, req, page), False
        if head == "workers" and not rest:
            return "Workers", views_ops.workers_view(db, req, page), True
        raise HTTPError("404 Not Found", f"no page at {path}")

    def _act(self, req: Request, name: str) -> Response:
        if not self.allow_actions:
            raise HTTPError("403 Forbidden", "this dashboard is read-only: start it with "
                                             "'liteq web --allow-actions' to act from it")
        if not self.guard.csrf_ok(req):
            raise HTTPError("403 Forbidden", "the form's CSRF token is missing or wrong: "
                                             "reload the page and try again")
        action = ACTIONS.get(name)
        if action is None:
            raise HTTPError("404 Not Found", f"no action named {name!r}")
        done = action(self.db, req)
        target = req.field("next", "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        base, _, query = target.partition("?")
        rest = [(k, v) for k, v in parse_qsl(query) if k != "done"] + [("done", done)]
        return Response.redirect(req.base + quote(base, safe="/:@") + "?" + urlencode(rest))

    def _asset(self, name: str) -> Response:
        kind = _STATIC.get(name)
        if kind is None:
            raise HTTPError("404 Not Found", f"no asset named {name!r}")
        if name not in self._static:
            self._static[name] = (resources.files(__package__) / "static" / name).read_bytes()
        resp = Response(self._static[name], content_type=kind)
        return resp

    def _error(self, req: Request, status: str, text: str) -> Response:
        body = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{h(status)}"
                f"</title><link rel=stylesheet href=\"{h(req.base)}/static/app.css\"></head>"
                f"<body><main><h1>{h(status)}</h1><p class=error>{h(text)}</p>"
                f"<p><a href=\"{h(req.base or '/')}\">Overview</a></p></main></body></html>")
        return Response(body, status)
