"""What the dashboard changes, each a POST checked by the app (actions on, CSRF token
right) before it gets here, and each through the public API: redrive and purge of dead
messages (one, the selected, every one matching an error, or all), and pause, resume
and run now of a schedule."""

from __future__ import annotations

from collections.abc import Callable

from .. import browse
from ..database import Database
from ..scheduler import Schedule, get_schedule
from .http import HTTPError, Request
from .views import get_queue

__all__ = ["ACTIONS"]


def _ids(req: Request) -> list[int]:
    out = []
    for value in req.form.get("ids", []):
        for part in value.split(","):
            part = part.strip()
            if not part.isdigit():
                raise HTTPError("400 Bad Request", f"ids must be message ids, got {part!r}")
            out.append(int(part))
    return out


def _chosen(db: Database, req: Request) -> tuple[str, list[int] | None]:
    """The queue and the dead message ids an action names: ``ids``, or ``match=error``
    with ``error`` (every dead message with that text), or ``match=all`` (None)."""
    name = req.field("queue")
    q = get_queue(db, name)
    match = req.field("match")
    if match == "all":
        return name, None
    if match == "error":
        error = None if req.field("noerror") == "1" else req.field("error")
        return name, browse.matching_ids(q, error)
    ids = _ids(req)
    if not ids:
        raise HTTPError("400 Bad Request", "choose at least one message (ids)")
    return name, ids


def redrive(db: Database, req: Request) -> str:
    name, ids = _chosen(db, req)
    q = db.queue(name)
    n = q.redrive() if ids is None else browse.redrive_ids(db, q, ids)
    return f"redrove {n} dead message{'s' if n != 1 else ''} of {name}: ready again"


def purge(db: Database, req: Request) -> str:
    name, ids = _chosen(db, req)
    q = db.queue(name)
    n = q.purge("dead") if ids is None else browse.purge_ids(q, ids)
    return f"purged {n} dead message{'s' if n != 1 else ''} of {name}"


def _schedule(db: Database, req: Request) -> tuple[str, Schedule]:
    name = req.field("schedule")
    s = get_schedule(db, name) if name else None
    if s is None:
        raise HTTPError("404 Not Found", f"no schedule named {name!r}")
    return name, s


def schedule_pause(db: Database, req: Request) -> str:
    name, s = _schedule(db, req)
    s.pause()
    return f"schedule {name} paused"


def schedule_resume(db: Database, req: Request) -> str:
    name, s = _schedule(db, req)
    s.resume()
    return f"schedule {name} resumed"


def schedule_run(db: Database, req: Request) -> str:
    name, s = _schedule(db, req)
    job = s.run_now()
    return f"schedule {name} fired now: job {job.id}"


#: Every action by the name in its URL (``POST /action/<name>``).
ACTIONS: dict[str, Callable[[Database, Request], str]] = {
    "redrive": redrive,
    "purge": purge,
    "schedule-pause": schedule_pause,
    "schedule-resume": schedule_resume,
    "schedule-run": schedule_run,
}
