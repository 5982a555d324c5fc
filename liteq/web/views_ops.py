"""The dashboard's operating pages: dead letters grouped by error (with redrive and
purge), schedules (with pause, resume and run now), topics, and the workers registry."""

from __future__ import annotations

import datetime as dt

from .. import browse
from ..database import Database
from ..errors import LiteqError
from ..registry import workers
from ..scheduler import get_schedule
from .http import HTTPError, Request
from .templates import Page, fmt_age, fmt_num, fmt_time, h, post_form, table
from .views import PAGE_SIZE, cap_note, get_queue

__all__ = ["dead_index", "dead_view", "schedules_view", "schedule_view", "topics_view",
           "workers_view"]

_ERROR_PREVIEW = 200


def dead_index(db: Database, req: Request, page: Page) -> str:
    """Every queue that holds dead messages, with how many."""
    rows = []
    capped = False
    for name in db.queues():
        try:
            c = browse.counts(db.queue(name))
        except LiteqError:
            continue
        if c.states["dead"]:
            rows.append([page.link("/dead/" + name, name), h(c.text("dead"))])
            capped = capped or c.over("dead")
    return table(["Queue", "Dead"], rows, numeric=(1,), css="dead-queues",
                 empty="no dead messages in any queue") + cap_note(capped)


def _short(text: str | None) -> str:
    if text is None:
        return "(no error recorded)"
    first = text.strip().splitlines()[-1] if text.strip() else text
    return first if len(first) <= _ERROR_PREVIEW else first[:_ERROR_PREVIEW] + "…"


def dead_view(db: Database, req: Request, page: Page, name: str) -> str:
    """One queue's dead messages: grouped by error, then a page of them to choose from."""
    q = get_queue(db, name)
    groups = browse.dead_groups(q)
    group_rows = []
    for g in groups:
        fields = {"queue": name, "match": "error", "error": g.error if g.error is not None else "",
                  "noerror": "1" if g.error is None else None}
        group_rows.append([
            f'<span title="{h(g.error)}">{h(_short(g.error))}</span>', fmt_num(g.messages),
            page.link(f"/message/{g.last_id}", g.last_id),
            post_form(page, "redrive", "Redrive all", fields)
            + post_form(page, "purge", "Purge all", fields,
                        confirm=f"Delete {g.messages} dead messages for good?", css="danger")])
    after = req.int_arg("after")
    result = browse.page(q, "dead", after=after, n=PAGE_SIZE)
    rows = []
    for m in result.messages:
        box = (f'<input type="checkbox" name="ids" value="{m.id}" form="selected" '
               f'aria-label="select {m.id}">' if page.allow_actions else "")
        rows.append([box, page.link(f"/message/{m.id}", m.id), h(m.attempts),
                     h(_short(m.error)), h(fmt_time(m.finished_at)),
                     post_form(page, "redrive", "Redrive", {"queue": name, "ids": m.id})])
    parts = [
        f"<p>{page.link('/queue/' + name, 'queue ' + name)} · "
        f"{sum(g.messages for g in groups):,} dead</p>",
        "<h2>By error</h2>",
        table(["Error", "Messages", "Newest", ""], group_rows, numeric=(1, 2),
              css="groups", empty="no dead messages"),
        "<h2>Messages</h2>",
    ]
    if page.allow_actions and rows:
        parts.append(
            f'<form id="selected" method="post" action="{h(page.base)}/action/redrive" '
            f'class="bulk">{page.csrf_input()}'
            f'<input type="hidden" name="next" value="{h(page.here)}">'
            f'<input type="hidden" name="queue" value="{h(name)}">'
            f'<label><input type="checkbox" class="select-all" data-for="ids"> all on this page'
            f'</label> <button type="submit" id="redrive-selected">Redrive selected</button> '
            f'<button type="submit" formaction="{h(page.base)}/action/purge" class="danger" '
            f'data-confirm="Delete the selected messages for good?">Purge selected</button>'
            f"</form>")
    parts.append(table(["", "Id", "Attempts", "Error", "Died", ""], rows, numeric=(1, 2),
                       css="messages dead", empty="no dead messages"
                       + (f" after id {after}" if after else "")))
    if result.next_after is not None:
        parts.append(f'<p class="pager">{page.link("/dead/" + name, "first page")} · '
                     f'{page.link("/dead/" + name, "next page →", after=result.next_after)}</p>')
    if groups:
        parts.append('<p class="actions">'
                     + post_form(page, "redrive", "Redrive every dead message",
                                 {"queue": name, "match": "all"})
                     + post_form(page, "purge", "Purge every dead message",
                                 {"queue": name, "match": "all"},
                                 confirm="Delete every dead message of this queue for good?",
                                 css="danger") + "</p>")
    return "".join(parts)


def _fire(moment: dt.datetime, tz: str | None) -> str:
    """A fire time in this server's local time and UTC, and in the schedule's own zone
    when it has one."""
    text = h(fmt_time(moment.timestamp()))
    if tz:
        text += f' <small>= {h(moment.strftime("%H:%M %Z"))} {h(tz)}</small>'
    return text


def _target(s: object) -> str:
    task = getattr(s, "task", None)
    if task:
        return f"task {task}"
    return f"queue {getattr(s, 'queue', '')}"


def _controls(page: Page, name: str, state: str) -> str:
    buttons = []
    if state == "active":
        buttons.append(post_form(page, "schedule-pause", "Pause", {"schedule": name}))
    elif state == "paused":
        buttons.append(post_form(page, "schedule-resume", "Resume", {"schedule": name}))
    buttons.append(post_form(page, "schedule-run", "Run now", {"schedule": name}))
    return "".join(buttons)


def schedules_view(db: Database, req: Request, page: Page) -> str:
    """Every schedule: timing in words, next fires in local time and UTC, controls."""
    rows = []
    for s in db.schedules():
        nxt = "<br>".join(_fire(t, s.tz) for t in s.next(3)) if s.state != "finished" else "-"
        rows.append([page.link("/schedule/" + s.name, s.name), h(s.description),
                     f'<span class="state-{h(s.state)}">{h(s.state)}</span>', nxt,
                     h(fmt_time(s.last_run_at)), h(_target(s)),
                     _controls(page, s.name, s.state)])
    return table(["Schedule", "Timing", "State", "Next fires", "Last fire", "Target", ""],
                 rows, css="schedules", empty="no schedules")


def schedule_view(db: Database, req: Request, page: Page, name: str) -> str:
    """One schedule and its history of fires with their lateness."""
    s = get_schedule(db, name)
    if s is None:
        raise HTTPError("404 Not Found", f"no schedule named {name!r}")
    runs = [[h(fmt_time(r.fire_at)), h(fmt_time(r.fired_at)), h(fmt_age(r.late)),
             page.link(f"/message/{r.job_id}", r.job_id) if r.job_id else "-"]
            for r in s.history(100)]
    nxt = "".join(f"<li>{_fire(t, s.tz)}</li>" for t in s.next(5)) \
        if s.state != "finished" else "<li>none</li>"
    return (f'<dl class="fields"><dt>timing</dt><dd>{h(s.description)} '
            f"<code>{h(s.kind)} {h(s.spec)}{(' ' + h(s.tz)) if s.tz else ''}</code></dd>"
            f"<dt>state</dt><dd>{h(s.state)}</dd><dt>target</dt><dd>{h(_target(s))}</dd>"
            f"<dt>misfire</dt><dd>{h(s.misfire)}</dd></dl>"
            f'<p class="actions">{_controls(page, s.name, s.state)}</p>'
            f"<h2>Next fires</h2><ul>{nxt}</ul><h2>History</h2>"
            + table(["Planned", "Fired", "Late by", "Job"], runs, numeric=(3,),
                    css="runs", empty="never fired"))


def topics_view(db: Database, req: Request, page: Page) -> str:
    """Every topic: its subscriptions, their patterns and depths."""
    rows = []
    capped = False
    for topic in db.topics():
        for q in db.topic(topic).subscriptions():
            c = browse.counts(q)
            capped = capped or c.capped
            rows.append([h(topic), page.link("/queue/" + q.name, q.name),
                         f"<code>{h(q.config.pattern)}</code>", h(c.text("ready")),
                         h(c.text("leased")), h(c.text("dead")), h(c.depth_text()),
                         h(c.max_depth if c.max_depth is not None else "-")])
    return table(["Topic", "Subscription", "Pattern", "Ready", "Leased", "Dead", "Depth",
                  "Max depth"], rows, numeric=(3, 4, 5, 6, 7), css="topics",
                 empty="no topics (a topic shows once it has a subscription)") + cap_note(capped)


def workers_view(db: Database, req: Request, page: Page) -> str:
    """The workers registry: each worker and scheduler, alive or gone, with the jobs
    it runs now."""
    now = db.clock()
    rows = []
    for w in workers(db):
        jobs = []
        for j in w["jobs"]:
            text = page.link(f"/message/{j['id']}", j["id"]) + f" for {h(fmt_age(now - j['since']))}"
            if j["progress"] is not None:
                text += (f' <progress max="1" value="{j["progress"]:.3f}"></progress> '
                         f"{j['progress']:.0%} {h(j['note'] or '')}")
            jobs.append(text)
        rows.append([h(w["id"]), h(w["kind"]), f'<span class="state-{h(w["state"])}">'
                     f'{h(w["state"])}</span>', h(w["host"]), h(w["pid"]),
                     h(",".join(w["queues"]) or "-"), h(w["pool"] or "-"),
                     h(w["concurrency"]), "<br>".join(jobs) or "-",
                     h(fmt_num(w["done"])), h(fmt_num(w["failed"])),
                     h(fmt_age(now - w["heartbeat_at"])), h(fmt_age(now - w["started_at"]))])
    return table(["Id", "Kind", "State", "Host", "Pid", "Queues", "Pool", "Slots", "Running",
                  "Done", "Failed", "Last beat", "Up"], rows, numeric=(4, 7, 9, 10),
                 css="workers", empty="no workers registered")
