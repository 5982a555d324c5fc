"""What ``liteq.connect()`` is pointed at: a SQLite file's path or a PostgreSQL URL.

No driver is imported here: telling the two apart, reading liteq's own ``schema``
parameter out of a URL and hiding a password must work without psycopg installed (to
say that it is missing, naming the database without its password).

Decisions (issue 17, B6):

* A target is PostgreSQL only when it is a URL whose scheme is ``postgresql://`` or
  ``postgres://`` (libpq's two). libpq's ``key=value`` strings (``host=h dbname=d``)
  are not taken: ``=`` and spaces are legal in file names, so such a string would be
  ambiguous, while ``://`` never starts a useful relative path.
* Any other ``scheme://`` is refused (``sqlite://x`` or ``mysql://x`` would otherwise
  become a directory named ``sqlite:`` beside the program); everything else is a path.
* ``?schema=NAME`` in a URL chooses the PostgreSQL schema holding liteq's tables (the
  same as ``connect(url, schema=NAME)``), so ``--db`` and ``$LITEQ_DB`` can name one; it
  is removed before the URL reaches libpq, which would refuse an unknown parameter.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import InvalidArgument

__all__ = ["POSTGRES_SCHEMES", "is_postgres", "describe", "redact_url", "split_schema"]

#: The URL schemes that select the PostgreSQL engine.
POSTGRES_SCHEMES = ("postgresql", "postgres")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_postgres(target: str | os.PathLike[str]) -> bool:
    """True if *target* is a ``postgresql://`` or ``postgres://`` URL; False for a path.
    InvalidArgument for a URL of any other scheme."""
    if not isinstance(target, str):
        return False
    found = _SCHEME.match(target)
    if found is None:
        return False
    scheme = found.group(1).lower()
    if scheme in POSTGRES_SCHEMES:
        return True
    raise InvalidArgument(
        f"liteq does not know the URL scheme {scheme!r} in {redact_url(target)!r}: give a "
        f"SQLite file's path (e.g. app.db) or a PostgreSQL URL "
        f"(postgresql://USER@HOST:PORT/DBNAME)"
    )


def redact_url(url: str) -> str:
    """*url* without its password (in the user part or a ``password=`` parameter)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^@/]*@", "//***@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = userinfo.split(":", 1)[0] + "@" + host
    query = "&".join(
        p for p in parts.query.split("&") if p and not p.lower().startswith("password=")
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def split_schema(url: str) -> tuple[str, str | None]:
    """*url* without liteq's ``schema`` parameter, and that parameter's value (None
    if absent)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in pairs if k == "schema"]
    if not schemas:
        return url, None
    if len(schemas) > 1:
        raise InvalidArgument(f"{redact_url(url)!r} gives schema= more than once")
    rest = urlencode([(k, v) for k, v in pairs if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schemas[0]


def describe(target: str | os.PathLike[str]) -> str:
    """How liteq names *target* in ``Database.path`` and messages: a file's absolute
    path, or the URL as given without its password."""
    if is_postgres(target):
        return redact_url(str(target))
    return os.path.abspath(os.fspath(target))
