"""The little of HTTP the dashboard needs on top of WSGI: a parsed request, a
response, and errors that become a status code."""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from ..errors import LiteqError

__all__ = ["Request", "Response", "HTTPError", "MAX_BODY"]

#: The largest form body read (an action names at most a page of ids).
MAX_BODY = 256 * 1024


def _path_text(raw: str) -> str:
    # PEP 3333: PATH_INFO holds the URL's bytes as latin-1 characters.
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


class HTTPError(LiteqError):
    """An answer other than 200: *status* (``"404 Not Found"``) and a text to show."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class Request:
    """One request, read from a WSGI environ."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method: str = environ.get("REQUEST_METHOD", "GET").upper()
        self.base: str = environ.get("SCRIPT_NAME", "").rstrip("/")
        self.path: str = _path_text(environ.get("PATH_INFO", "") or "/")
        self.query_string: str = environ.get("QUERY_STRING", "")
        self.query: dict[str, list[str]] = parse_qs(self.query_string)
        self.cookies: dict[str, str] = {}
        raw = environ.get("HTTP_COOKIE", "")
        if raw:
            try:
                jar: SimpleCookie = SimpleCookie(raw)
                self.cookies = {k: m.value for k, m in jar.items()}
            except CookieError:
                self.cookies = {}
        self._form: dict[str, list[str]] | None = None

    def arg(self, name: str, default: str = "") -> str:
        """The first value of query parameter *name*."""
        values = self.query.get(name)
        return values[0] if values else default

    def int_arg(self, name: str, default: int = 0) -> int:
        """Query parameter *name* as a non-negative integer (400 otherwise)."""
        text = self.arg(name, "").strip()
        if not text:
            return default
        if not text.isdigit():
            raise HTTPError("400 Bad Request", f"{name} must be a whole number, got {text!r}")
        return int(text)

    def header(self, name: str) -> str:
        return str(self.environ.get("HTTP_" + name.upper().replace("-", "_"), ""))

    @property
    def form(self) -> dict[str, list[str]]:
        """The urlencoded body of a POST (read once)."""
        if self._form is None:
            try:
                length = int(self.environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > MAX_BODY:
                raise HTTPError("413 Payload Too Large", "the form is too large")
            body = self.environ["wsgi.input"].read(length) if length > 0 else b""
            self._form = parse_qs(body.decode("utf-8", "replace"))
        return self._form

    def field(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0] if values else default

    @property
    def here(self) -> str:
        """The path and query of this request, under the mount point (for ``next``)."""
        return self.path + ("?" + self.query_string if self.query_string else "")


class Response:
    """Status, headers and body of an answer."""

    def __init__(self, body: str | bytes = b"", status: str = "200 OK",
                 content_type: str = "text/html; charset=utf-8") -> None:
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.status = status
        self.headers: list[tuple[str, str]] = [("Content-Type", content_type)]

    @classmethod
    def redirect(cls, location: str) -> Response:
        """A 303 See Other to *location*."""
        r = cls(b"", "303 See Other", "text/plain; charset=utf-8")
        r.headers.append(("Location", location))
        return r
