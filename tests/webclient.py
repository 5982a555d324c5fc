"""A dashboard served on a free loopback port from a thread, and a small HTTP client
that keeps cookies and does not follow redirects (the web tests look at each answer)."""

from __future__ import annotations

import html
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from typing import Any
from urllib.parse import urlencode

import liteq
from liteq.web.server import make

__all__ = ["Answer", "Client", "served", "table_rows", "csrf_of"]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Client:
    """Requests to one served dashboard, with a cookie jar of its own."""

    base: str
    jar: CookieJar = field(default_factory=CookieJar)

    def __post_init__(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  _NoRedirect())

    def request(self, path: str, data: dict[str, Any] | list[tuple[str, Any]] | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        body = None if data is None else urlencode(data, doseq=True).encode()
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as resp:
                return Answer(resp.status, dict(resp.headers), resp.read().decode())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, dict(exc.headers), exc.read().decode())

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request(path, **kw)

    def post(self, path: str, data: dict[str, Any] | list[tuple[str, Any]], **kw: Any) -> Answer:
        return self.request(path, data=data, **kw)


@contextmanager
def served(db: liteq.Database, **options: Any) -> Iterator[Client]:
    """The dashboard of *db* on 127.0.0.1 (any free port) while the block runs."""
    server = make(db, "127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield Client(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


_TAG = re.compile(r"<[^>]+>")


def table_rows(page: str, css: str) -> list[list[str]]:
    """The body rows of the table of class *css* on *page*, as cell texts."""
    m = re.search(rf'<table class="{re.escape(css)}">(.*?)</table>', page, re.S)
    assert m, f"no table of class {css}"
    body = m.group(1).split("<tbody>", 1)[1]
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)
        rows.append([html.unescape(_TAG.sub("", c)).strip() for c in cells])
    return rows


def csrf_of(page: str) -> str:
    """The CSRF token the page's forms carry."""
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert m, "no CSRF token on the page (is it read-only?)"
    return m.group(1)
