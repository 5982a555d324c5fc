"""HTML of the dashboard: one page layout, tables, forms and small formats. Every
value that came from the database goes through :func:`h` (``html.escape``); a page is
built from strings that are escaped where they are made, never after."""

from __future__ import annotations

import datetime as dt
import html
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from ..cli_output import fmt_age as cli_fmt_age

__all__ = ["h", "Page", "table", "post_form", "fmt_age", "fmt_time", "fmt_num", "link",
           "NAV"]

#: The pages in the navigation bar: (path, title).
NAV = [("/", "Overview"), ("/dead", "Dead letters"), ("/schedules", "Schedules"),
       ("/topics", "Topics"), ("/workers", "Workers"), ("/metrics", "Metrics")]


def h(value: Any) -> str:
    """*value* as text, escaped for HTML (quotes too: safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt_age(seconds: float | None) -> str:
    """A duration the way people say it: ``4s``, ``3m 20s``, ``2h 5m``, ``3d 4h``."""
    return cli_fmt_age(seconds, spaced=True)


def fmt_time(ts: float | None) -> str:
    """A moment in the server's local time and in UTC."""
    if ts is None:
        return "-"
    local = dt.datetime.fromtimestamp(ts).astimezone()
    utc = dt.datetime.fromtimestamp(ts, dt.UTC)
    text = local.strftime("%Y-%m-%d %H:%M:%S %Z")
    if local.utcoffset() != dt.timedelta(0):
        text += utc.strftime(" (%H:%M:%S UTC)")
    return text


def fmt_num(value: float | None, digits: int = 1) -> str:
    """A count or a rate; ``-`` for None."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def link(base: str, path: str, text: Any, **query: Any) -> str:
    """``<a href=...>`` to *path* under the app's mount point *base*."""
    q = {k: v for k, v in query.items() if v not in (None, "")}
    href = base + quote(path, safe="/:@") + ("?" + urlencode(q) if q else "")
    return f'<a href="{h(href)}">{h(text)}</a>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[int] = (),
          css: str = "", empty: str = "nothing here") -> str:
    """A table of cells that are already HTML (escape values with :func:`h`)."""
    head = "".join(f'<th{" class=num" if i in numeric else ""}>{h(t)}</th>'
                   for i, t in enumerate(headers))
    body = []
    for row in rows:
        cells = "".join(f'<td{" class=num" if i in numeric else ""}>{c}</td>'
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}" class="empty">{h(empty)}</td></tr>')
    cls = f' class="{h(css)}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def post_form(page: Page, action: str, label: str, fields: dict[str, Any] | None = None, *,
              confirm: str | None = None, css: str = "") -> str:
    """A one-button form that POSTs to ``/action/<action>`` with the CSRF token; empty
    when the dashboard is read-only."""
    if not page.allow_actions:
        return ""
    inputs = "".join(f'<input type="hidden" name="{h(k)}" value="{h(v)}">'
                     for k, v in (fields or {}).items() if v is not None)
    extra = f' data-confirm="{h(confirm)}"' if confirm else ""
    cls = f' class="{h(css)}"' if css else ""
    return (f'<form method="post" action="{h(page.base)}/action/{h(action)}" class="inline"'
            f'{extra}>{page.csrf_input()}<input type="hidden" name="next" value="{h(page.here)}">'
            f'{inputs}<button type="submit"{cls}>{h(label)}</button></form>')


class Page:
    """What a view needs to build a page: the mount point, where it is, whether actions
    are on, the CSRF token, and a notice to show (after an action)."""

    def __init__(self, base: str, here: str, allow_actions: bool, csrf: str,
                 notice: str | None = None, db_name: str = "") -> None:
        self.base = base
        self.here = here
        self.allow_actions = allow_actions
        self.csrf = csrf
        self.notice = notice
        self.db_name = db_name

    def csrf_input(self) -> str:
        """The hidden field every action form carries."""
        return f'<input type="hidden" name="csrf" value="{h(self.csrf)}">'

    def url(self, path: str, **query: Any) -> str:
        """The URL of *path* under the mount point (not escaped)."""
        q = {k: v for k, v in query.items() if v not in (None, "")}
        return self.base + quote(path, safe="/:@") + ("?" + urlencode(q) if q else "")

    def link(self, path: str, text: Any, **query: Any) -> str:
        return link(self.base, path, text, **query)

    def render(self, title: str, body: str, *, refresh: bool = False) -> str:
        """The whole document: head, navigation, notice, *body*."""
        nav = "".join(
            f'<a href="{h(self.base + path)}"'
            f'{" class=current" if self.here.split("?")[0] == path else ""}>{h(text)}</a>'
            for path, text in NAV)
        notice = f'<p class="notice" role="status">{h(self.notice)}</p>' if self.notice else ""
        mode = ("actions on" if self.allow_actions else "read-only")
        auto = ' data-refresh="5"' if refresh else ""
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{h(title)} - liteq</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{h(self.base)}/static/app.css">
<script src="{h(self.base)}/static/app.js" defer></script>
</head><body{auto}>
<header><span class="brand">liteq</span><nav>{nav}</nav>
<span class="meta">{h(self.db_name)} &middot; {h(mode)} &middot;
<time>{h(time.strftime("%H:%M:%S"))}</time></span></header>
<main><h1>{h(title)}</h1>{notice}{body}</main>
</body></html>
"""
