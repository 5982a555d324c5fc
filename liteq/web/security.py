"""The dashboard's guards: the access token (``--token``), the CSRF token of every
action, and the headers every answer carries.

CSRF: each browser gets a random ``liteq_csrf`` cookie; the token its forms carry is the
HMAC of that cookie under a secret made when the process started (a signed double
submit). Another site can make a browser send the cookie, but cannot read it or the
page, so it cannot know the token; a token from another process, or for another
cookie, does not match.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from .http import Request

__all__ = ["Guard", "CSP", "SECURITY_HEADERS", "CSRF_COOKIE", "TOKEN_COOKIE", "TOKEN_HEADER"]

CSRF_COOKIE = "liteq_csrf"
TOKEN_COOKIE = "liteq_token"
#: The header a script or a proxy passes the access token in (or ``Authorization:
#: Bearer TOKEN``).
TOKEN_HEADER = "X-Liteq-Token"

#: Scripts and styles only from the dashboard itself (no inline script, nothing from
#: elsewhere); forms post only to it; no framing.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

SECURITY_HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]


class Guard:
    """Checks a request's access token and an action's CSRF token."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self._secret = secrets.token_bytes(32)

    # -- access token -----------------------------------------------------------------

    def _same(self, given: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(given.encode(), self.token.encode())

    def token_from_query(self, req: Request) -> bool:
        """Whether ``?token=`` carries the right token (then the app sets the cookie)."""
        given = req.arg("token")
        return self.token is not None and bool(given) and self._same(given)

    def allowed(self, req: Request) -> bool:
        """Whether the request may be served: no token is set, or it carries it (the
        header, a bearer token, or the cookie)."""
        if self.token is None:
            return True
        auth = req.header("Authorization")
        candidates = [req.header(TOKEN_HEADER), req.cookies.get(TOKEN_COOKIE, "")]
        if auth.lower().startswith("bearer "):
            candidates.append(auth[7:].strip())
        return any(c and self._same(c) for c in candidates)

    # -- CSRF ---------------------------------------------------------------------------

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(24)

    def csrf_token(self, nonce: str) -> str:
        """The token forms carry for the browser whose cookie is *nonce*."""
        return hmac.new(self._secret, b"csrf:" + nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, req: Request) -> bool:
        """Whether a POST carries the token that matches its cookie (and, when the
        browser says where the form came from, that it came from here)."""
        nonce = req.cookies.get(CSRF_COOKIE, "")
        given = req.field("csrf")
        if not nonce or not given:
            return False
        if not hmac.compare_digest(given.encode(), self.csrf_token(nonce).encode()):
            return False
        origin = req.header("Origin")
        host = req.header("Host")
        if origin and origin != "null" and host:
            return origin.split("://", 1)[-1] == host
        return True
