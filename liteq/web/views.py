"""The dashboard's main pages: the overview of every queue, one queue's messages, and
one message (or job). Each view reads through the public API and the backend's read
verbs, and returns the page's HTML body."""

from __future__ import annotations

from typing import Any

from .. import browse
from ..backends.records import STATES
from ..backends.workflow import WAITING_AT
from ..cli_output import to_json
from ..codec import decode
from ..database import Database
from ..errors import LiteqError, SerializationError
from ..queue import Message, Queue
from ..registry import workers
from ..workflow import workflow_state
from .charts import RANGES, series, svg_chart
from .http import HTTPError, Request
from .templates import Page, fmt_age, fmt_num, fmt_time, h, post_form, table

__all__ = ["overview", "queue_view", "message_view", "payload_text", "get_queue",
           "cap_note", "RATE_MINUTES", "PAGE_SIZE", "Redirect"]

#: Rates are the history's counts over the last this many minutes (and the current one).
RATE_MINUTES = 5
#: Messages per page of a queue.
PAGE_SIZE = 50
_PREVIEW = 120


def get_queue(db: Database, name: str) -> Queue:
    """Queue *name*, or a 404 when there is none (never creates one)."""
    if not name or not db.has_queue(name):
        raise HTTPError("404 Not Found", f"no queue named {name!r}")
    return db.queue(name)


def payload_text(value: Any, *, indent: int | None = None) -> str:
    """A decoded payload as JSON text (bytes as ``{"$bytes": base64}``), not escaped."""
    return to_json(value, indent=indent)


def _preview(msg: Message) -> str:
    text = payload_text(msg.payload)
    return h(text if len(text) <= _PREVIEW else text[:_PREVIEW] + "…")


def _span(req: Request) -> str:
    span = req.arg("range", "hour")
    if span not in RANGES:
        raise HTTPError("400 Bad Request", f"range must be one of {', '.join(RANGES)}")
    return span


def _span_links(page: Page, req: Request, span: str, path: str) -> str:
    parts = []
    for name in RANGES:
        if name == span:
            parts.append(f"<strong>{h(name)}</strong>")
        else:
            parts.append(page.link(path, name, range=name))
    return '<p class="ranges">Charts: ' + " · ".join(parts) + "</p>"


def _charts(db: Database, qids: list[int], depth_now: int, span: str,
            name: str) -> str:
    """Depth and throughput charts of one queue (one id in *qids*) or of all."""
    buckets, width, _ = RANGES[span]
    now_minute = int(db.clock() // 60)
    since = (now_minute // width - buckets + 1) * width
    sums = db.backend.history_sums(since, width, qids[0] if len(qids) == 1 else None)
    s = series(sums, depth_now, now_minute, span)
    return ('<div class="charts">'
            + svg_chart(f"Depth of {name}", [("depth", "depth", s.depth)], span)
            + svg_chart(f"Throughput of {name}", [("put", "put", s.put),
                                                  ("acked", "acked", s.acked),
                                                  ("failed", "failed", s.failed),
                                                  ("dead", "dead", s.dead)], span)
            + "</div>")


def _rates(db: Database, qids: dict[int, str]) -> dict[str, tuple[float, float]]:
    now = db.clock()
    first = int(now // 60) - RATE_MINUTES
    elapsed = max(1.0, now - first * 60)
    sums: dict[str, list[int]] = {name: [0, 0] for name in qids.values()}
    for r in db.backend.history(first):
        if r.task == "" and r.qid in qids:
            acc = sums[qids[r.qid]]
            acc[0] += r.put
            acc[1] += r.acked
    return {name: (p / elapsed, a / elapsed) for name, (p, a) in sums.items()}


def _oldest(c: browse.Counts) -> str:
    age = fmt_age(c.oldest_ready_age)
    return f"≥ {age}" if c.over("ready") else age


def cap_note(capped: bool) -> str:
    """The page's word on counts that stopped at the cap (empty when none did)."""
    if not capped:
        return ""
    return (f'<p class="note">Counts stop at {browse.COUNT_CAP:,} ("{browse.COUNT_CAP:,}+" '
            "means more) so that a page stays fast on a big queue: "
            "<code>liteq stats QUEUE</code> counts exactly.</p>")


def overview(db: Database, req: Request, page: Page) -> str:
    """Every queue with its counts, oldest age and rates; charts; workers alive."""
    span = _span(req)
    found: list[tuple[Queue, browse.Counts]] = []
    for name in db.queues():
        try:
            q = db.queue(name)
            found.append((q, browse.counts(q)))
        except LiteqError:
            if db.has_queue(name):
                raise  # deleted since the listing: not shown
    qids = {q.id: q.name for q, _ in found}
    rates = _rates(db, qids)
    rows = []
    for q, c in found:
        name = q.name
        put_rate, ack_rate = rates.get(name, (0.0, 0.0))
        label = page.link("/queue/" + name, name)
        if q.refresh().paused:
            label += ' <span class="badge">paused</span>'
        rows.append([
            label,
            *(page.link("/queue/" + name, c.text(state), state=state)
              for state in ("ready", "delayed", "leased")),
            page.link("/dead/" + name, c.text("dead")) if c.states["dead"] else "0",
            h(c.text("done")),
            h(_oldest(c)),
            h(fmt_num(put_rate, 2)), h(fmt_num(ack_rate, 2)),
        ])
    registry = workers(db)
    alive = [w for w in registry if w["state"] == "alive" and w["kind"] == "worker"]
    busy = sum(len(w["jobs"]) for w in alive)
    slots = sum(w["concurrency"] for w in alive)
    gone = sum(1 for w in registry if w["state"] == "gone")
    body = [
        table(["Queue", "Ready", "Delayed", "Leased", "Dead", "Done", "Oldest ready",
               "Put/s", "Ack/s"], rows, numeric=range(1, 9), css="queues",
              empty="no queues yet"),
        cap_note(any(c.capped for _, c in found)),
        f'<p class="summary">Rates over the last {RATE_MINUTES} minutes. '
        f'Workers alive: <strong id="workers-alive">{len(alive)}</strong> '
        f"({busy} of {slots} slots busy{f', {gone} gone' if gone else ''}) - "
        f'{page.link("/workers", "see workers")}</p>',
        _span_links(page, req, span, "/"),
        _charts(db, list(qids), sum(c.depth for _, c in found), span, "all queues"),
    ]
    return "".join(body)


def _tabs(page: Page, name: str, counts: browse.Counts, current: str) -> str:
    parts = []
    for state in STATES:
        text = f"{state} ({counts.text(state)})"
        if state == current:
            parts.append(f'<strong class="tab">{h(text)}</strong>')
        else:
            parts.append(f'<span class="tab">{page.link("/queue/" + name, text, state=state)}</span>')
    return '<nav class="tabs">' + "".join(parts) + "</nav>"


def queue_view(db: Database, req: Request, page: Page, name: str) -> str:
    """One queue: its messages in one state, a keyset page at a time, searchable by id,
    dedup key or task; its settings and charts."""
    q = get_queue(db, name)
    wanted = req.arg("id").strip()
    if wanted:
        if not wanted.isdigit():
            raise HTTPError("400 Bad Request", f"id must be a whole number, got {wanted!r}")
        raise Redirect(page.url(f"/message/{int(wanted)}"))
    state = req.arg("state", "ready")
    if state not in STATES:
        raise HTTPError("400 Bad Request", f"state must be one of {', '.join(STATES)}")
    after = req.int_arg("after")
    key = req.arg("key").strip() or None
    task = req.arg("task").strip() or None
    span = _span(req)
    counts = browse.counts(q)
    result = browse.page(q, state, after=after, n=PAGE_SIZE, key=key, task=task)
    rows = []
    for m in result.messages:
        call = m.payload.get("task") if isinstance(m.payload, dict) else None
        rows.append([page.link(f"/message/{m.id}", m.id), h(m.priority), h(m.attempts),
                     h(m.key or ""), h(call if isinstance(call, str) else ""), _preview(m),
                     h(fmt_age(db.clock() - m.enqueued_at)), h(m.error or "")])
    c = q.refresh()
    settings = (f'<p class="settings">max_depth {h(c.max_depth if c.max_depth else "none")} · '
                f"lease {h(fmt_age(c.lease))} · max_attempts {h(c.max_attempts)} · "
                f"dead_letter {h(c.dead_letter or 'stay here')} · "
                f"retention {h(fmt_age(c.retention))}"
                f"{' · <span class=badge>paused</span>' if c.paused else ''}</p>")
    search = (f'<form method="get" action="{h(page.url("/queue/" + name))}" class="search">'
              f'<input type="hidden" name="state" value="{h(state)}">'
              f'<label>id <input name="id" size="8" inputmode="numeric"></label> '
              f'<label>key <input name="key" value="{h(key or "")}"></label> '
              f'<label>task <input name="task" value="{h(task or "")}"></label> '
              f'<button type="submit">Search</button> '
              f'{page.link("/queue/" + name, "clear", state=state)}</form>')
    pager = [page.link("/queue/" + name, "first page", state=state, key=key, task=task)]
    if result.next_after is not None:
        pager.append(page.link("/queue/" + name, "next page →", state=state, key=key, task=task,
                               after=result.next_after))
    note = ""
    if task is not None and key is not None:  # only then a scan (see browse.page)
        note = (f"<p>Looked at {result.scanned:,} {h(state)} messages for task {h(task)}"
                f"{' (stopped at the scan limit: next page goes on)' if result.next_after else ''}.</p>")
    dead_link = (f'<p>{page.link("/dead/" + name, "dead letters of this queue")}</p>'
                 if counts.states["dead"] else "")
    return "".join([
        settings, _tabs(page, name, counts, state), cap_note(counts.capped), search, note,
        table(["Id", "Priority", "Attempts", "Key", "Task", "Payload", "Age", "Error"], rows,
              numeric=(0, 1, 2), css="messages", empty=f"no {state} messages"
              + (f" after id {after}" if after else "")),
        f'<p class="pager">{" · ".join(pager)}</p>', dead_link,
        _span_links(page, req, span, "/queue/" + name),
        _charts(db, [q.id], counts.depth, span, name),
    ])


class Redirect(Exception):
    """Raised by a view to answer with a redirect instead of a page."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location



def _decoded(blob: bytes | None) -> str:
    if blob is None:
        return "null"
    try:
        return payload_text(decode(blob), indent=2)
    except SerializationError as exc:
        return f"(cannot decode: {exc})"


def _workflow_fields(db: Database, page: Page, mid: int) -> list[tuple[str, str]]:
    """A job's place in its workflow, as ``liteq job N`` shows it: its parents (with how
    each ended) and children as links, and the workflow's state; none outside one."""
    job = db.job(mid)
    parents, children = job.edges()
    wid = job.workflow
    if wid is None and not parents and not children:
        return []
    fields = [
        ("parents", ", ".join(
            page.link(f"/message/{e.parent}", e.parent)
            + h(f" ({e.outcome or 'not ended'}{', failure allowed' if e.allow_failure else ''})")
            for e in parents) or "-"),
        ("children", ", ".join(page.link(f"/message/{e.child}", e.child)
                               for e in children) or "-"),
    ]
    if wid is not None:
        state, counts = workflow_state(db, wid)
        jobs = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        fields.append(("workflow", page.link(f"/message/{wid}", wid)
                       + f' <span class="wf-state">{h(state)}</span> ({h(jobs)})'))
    return fields


def _worker_cell(page: Page, worker: str | None) -> str:
    return page.link("/workers", worker) if worker else "<em>unknown</em>"


def _attempts_html(db: Database, page: Page, mid: int, msg: Message | None) -> str:
    """The job's attempts timeline: one row per attempt (worker, start, run time,
    outcome, the error with its traceback), and the one running now."""
    rows = []
    for a in db.backend.attempts(mid):
        took = None if a.started_at is None else max(0.0, a.ended_at - a.started_at)
        error = ""
        if a.error:
            head, _, rest = a.error.partition("\n")
            error = h(head) + (f"<details><summary>traceback</summary><pre class=traceback>"
                               f"{h(rest)}</pre></details>" if rest else "")
        rows.append([h(a.attempt), f'<span class="outcome {h(a.outcome.replace(" ", "-"))}">'
                     f"{h(a.outcome)}</span>", _worker_cell(page, a.worker),
                     h(fmt_time(a.started_at)), h(fmt_time(a.ended_at)), h(fmt_age(took)), error])
    if msg is not None and msg.state == "leased":
        held = [(w["id"], j["since"]) for w in workers(db) for j in w["jobs"] if j["id"] == mid]
        wid, since = held[0] if held else (None, None)
        rows.append([h(msg.attempts), '<span class="outcome running">running</span>',
                     _worker_cell(page, wid), h(fmt_time(since)), "-", "-", ""])
    if not rows:
        return ""
    return ('<h2>Attempts</h2>' + table(["#", "outcome", "worker", "started", "ended", "took",
                                         "error"], rows, numeric=[0], css="attempts"))


def message_view(db: Database, req: Request, page: Page, mid: int) -> str:
    """One message (or a finished job whose message is gone): payload and headers
    decoded, attempts, worker, durations, traceback, result, progress; a workflow
    job's parents, children and workflow state."""
    msg = db.message(mid)
    info = db.job(mid).info() if msg is not None or db.backend.result(mid) else None
    if msg is None and info is None:
        raise HTTPError("404 Not Found", f"no message or job with id {mid}")
    fields: list[tuple[str, str]] = []
    if msg is not None:
        fields += [("queue", page.link("/queue/" + msg.queue, msg.queue, state=msg.state)),
                   ("state", h(msg.state)), ("priority", h(msg.priority)),
                   ("attempts", h(msg.attempts)), ("key", h(msg.key or "-")),
                   ("enqueued", h(fmt_time(msg.enqueued_at))),
                   # A waiting workflow job is delayed until a year no clock shows.
                   ("due", h("when its parents end" if msg.run_at >= WAITING_AT
                             else fmt_time(msg.run_at))),
                   ("lease until", h(fmt_time(msg.lease_until))),
                   ("finished", h(fmt_time(msg.finished_at))),
                   ("came from", h(msg.origin or "-"))]
        if msg.decode_error:
            fields.append(("cannot decode", h(msg.decode_error)))
    if info is not None and (info.task is not None or msg is None):
        fields += [("task", h(info.task or "-")), ("job state", h(info.state)),
                   ("started", h(fmt_time(info.started_at))),
                   ("run time", h(fmt_age(info.duration))),
                   ("result kept until", h(fmt_time(info.expires_at)))]
        if msg is None:
            fields += [("queue", h(info.queue or "-")), ("attempts", h(info.attempts)),
                       ("finished", h(fmt_time(info.finished_at)))]
    fields += _workflow_fields(db, page, mid)
    holder = [w for w in workers(db) for j in w["jobs"] if j["id"] == mid]
    if holder:
        fields.append(("worker", page.link("/workers", holder[0]["id"])
                       + f" ({h(holder[0]['state'])})"))
    progress = db.backend.progress([mid]).get(mid)
    if progress is not None:
        fields.append(("progress", f'<progress max="1" value="{progress.fraction:.3f}"></progress> '
                       f"{progress.fraction:.0%} {h(progress.note)}"))
    dl = "".join(f"<dt>{h(k)}</dt><dd>{v}</dd>" for k, v in fields)
    parts = [f'<dl class="fields">{dl}</dl>', _attempts_html(db, page, mid, msg)]
    if info is not None and info.task is not None and info.args is not None:
        parts.append("<h2>Arguments</h2><pre class=data>"
                     + h(payload_text({"args": info.args, "kwargs": info.kwargs}, indent=2))
                     + "</pre>")
    if msg is not None:
        parts.append("<h2>Payload</h2><pre class=data id=payload>"
                     + h(payload_text(msg.payload, indent=2)) + "</pre>")
        parts.append("<h2>Headers</h2><pre class=data>"
                     + h(payload_text(msg.headers, indent=2)) + "</pre>")
    error = msg.error if msg is not None else None
    if not error and info is not None and info.error is not None:
        e = info.error
        error = (f"{e.type}: {e.message}" if e.type else e.message) + (
            "\n" + e.traceback if e.traceback else "")
    if error:
        parts.append("<h2>Last error</h2><pre class=traceback>" + h(error) + "</pre>")
    if info is not None and info.value is not None:
        parts.append("<h2>Result</h2><pre class=data>" + h(_decoded(info.value)) + "</pre>")
    if msg is not None and msg.state == "dead":
        q = db.queue(msg.queue)
        parts.append('<p class="actions">'
                     + post_form(page, "redrive", "Redrive", {"queue": q.name, "ids": mid})
                     + post_form(page, "purge", "Purge", {"queue": q.name, "ids": mid},
                                 confirm=f"Delete message {mid} for good?", css="danger")
                     + "</p>")
    return "".join(parts)
