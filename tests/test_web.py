"""The web dashboard over HTTP (issue 21), on every engine: a real server on a loopback
port in a thread, real requests; what the pages show is checked against the database,
and so is what an action changed (or, refused, did not change)."""

from __future__ import annotations

import io
import re
import sys
from typing import Any
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from webclient import Client, csrf_of, served, table_rows
from workerapp_tools import drain

import liteq
from liteq import browse
from liteq.cli import cli
from liteq.metrics import render
from liteq.registry import Registration
from liteq.web import app
from liteq.web.security import CSP
from liteq.workflow import chain

pytestmark = pytest.mark.every_engine


def _fill(db: liteq.Database) -> dict[str, Any]:
    emails = db.queue("emails", max_attempts=1)
    emails.put_many([{"to": f"u{n}@example.com"} for n in range(6)])
    emails.put("later", delay=3600)
    for reason in ("SMTP: 550 mailbox unavailable", "SMTP: 550 mailbox unavailable", "timeout"):
        emails.get().fail(reason)  # type: ignore[union-attr]
    held = emails.get()
    reports = db.queue("reports", retention=3600)
    reports.put({"week": 1})
    reports.get().ack()  # type: ignore[union-attr]
    db.queue("idle")
    return {"held": held}


def _overview(client: Client) -> dict[str, list[str]]:
    answer = client.get("/")
    assert answer.status == 200
    return {row[0].split()[0]: row[1:6] for row in table_rows(answer.text, "queues")}


def _state(db: liteq.Database, mid: int) -> str | None:
    msg = db.message(mid)
    return None if msg is None else msg.state


def _dead_ids(db: liteq.Database, queue: str) -> list[int]:
    return [m.id for m in db.queue(queue).peek(100, state="dead")]


def test_the_overview_lists_every_queue_with_its_counts(db: liteq.Database) -> None:
    _fill(db)
    with served(db) as client:
        rows = _overview(client)
    assert set(rows) == set(db.queues())
    for name, cells in rows.items():
        st = db.queue(name).stats()
        assert cells == [f"{st[s]:,}" for s in ("ready", "delayed", "leased", "dead", "done")]
    assert rows["emails"] == ["2", "1", "1", "3", "0"]
    assert rows["reports"] == ["0", "0", "0", "0", "1"]


def test_counts_past_the_cap_show_as_more_and_the_page_says_where_exact_ones_are(
        db: liteq.Database, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(db)
    billing = db.topic("orders").subscribe("billing", pattern="order.#").name
    db.topic("orders").publish(1, key="order.new")
    db.topic("orders").publish(2, key="order.new")
    monkeypatch.setattr(browse, "COUNT_CAP", 2)
    with served(db) as client:
        rows = _overview(client)
        assert rows["emails"] == ["2", "1", "1", "2+", "0"]  # 3 dead: more than 2
        assert "Counts stop at 2" in client.get("/").text
        queue_page = client.get("/queue/emails").text
        assert "dead (2+)" in queue_page and "liteq stats QUEUE" in queue_page
        assert table_rows(client.get("/dead").text, "dead-queues") == [["emails", "2+"]]
        billing_page = client.get("/queue/" + billing).text
        assert "ready (2)" in billing_page and "Counts stop at" not in billing_page
        assert table_rows(client.get("/topics").text, "topics")[0][3] == "2"
        metrics = client.get("/metrics").text  # not a page: exact
    assert 'queue="emails",state="dead"} 3' in metrics and "2+" not in metrics


def test_every_view_renders_and_a_missing_thing_is_a_404(db: liteq.Database) -> None:
    _fill(db)
    db.schedule("nightly", cron="0 3 * * *", tz="Europe/Berlin", queue="emails", payload=1)
    db.topic("orders").subscribe("billing", pattern="order.*.eu")
    dead = _dead_ids(db, "emails")[0]
    with served(db) as client:
        for path in ("/", "/?range=day", "/?range=week", "/queue/emails",
                     "/queue/emails?state=dead", f"/message/{dead}", "/dead", "/dead/emails",
                     "/schedules", "/schedule/nightly", "/topics", "/workers"):
            answer = client.get(path)
            assert answer.status == 200, (path, answer.text)
            assert answer.headers["Content-Security-Policy"] == CSP
            assert "<script>" not in answer.text  # the one script is a file of its own
        for path in ("/queue/nope", "/message/999999", "/schedule/nope", "/dead/nope", "/x"):
            assert client.get(path).status == 404, path
        assert client.get("/?range=year").status == 400
    assert not db.has_queue("nope")


def test_a_queue_is_paged_by_id_and_searched_by_id_key_and_task(db: liteq.Database) -> None:
    q = db.queue("bulk")
    ids = q.put_many([{"n": n} for n in range(120)])
    keyed = q.put("x", key="order-7")

    @db.task(name="resize", queue="bulk")
    def resize(n: int) -> None:
        pass

    job = resize.delay(3)
    with served(db) as client:
        first = client.get("/queue/bulk")
        shown = [int(r[0]) for r in table_rows(first.text, "messages")]
        assert shown == ids[:50]
        after = re.search(r'after=(\d+)">next page', first.text)
        assert after and int(after.group(1)) == ids[49]
        second = client.get(f"/queue/bulk?state=ready&after={after.group(1)}")
        assert [int(r[0]) for r in table_rows(second.text, "messages")] == ids[50:100]
        by_key = client.get("/queue/bulk?state=ready&key=order-7")
        assert [int(r[0]) for r in table_rows(by_key.text, "messages")] == [keyed]
        by_task = client.get("/queue/bulk?state=ready&task=resize")
        assert [int(r[0]) for r in table_rows(by_task.text, "messages")] == [job.id]
        by_id = client.get(f"/queue/bulk?id={ids[7]}")
        assert by_id.status == 303 and by_id.headers["Location"].endswith(f"/message/{ids[7]}")


def test_a_message_shows_its_payload_decoded_with_bytes_and_markup_as_text(
        db: liteq.Database) -> None:
    mid = db.queue("raw").put({"html": "<script>alert(1)</script>", "blob": b"\x00\xff"},
                              headers={"trace": "t-1"})
    with served(db) as client:
        page = client.get(f"/message/{mid}").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "$bytes" in page and "AP8=" in page  # base64 of 00 ff
    assert "t-1" in page


def test_a_job_shows_its_arguments_error_and_result(db: liteq.Database) -> None:
    @db.task(name="add", queue="math")
    def add(a: int, b: int) -> int:
        return a + b

    job = add.delay(2, 3)
    msg = db.queue("math").get()
    assert msg is not None
    db.backend.set_progress(job.id, 0.4, "resized 40 of 100")
    with served(db) as client:
        page = client.get(f"/message/{job.id}").text
    assert "Arguments" in page and "add" in page
    assert "resized 40 of 100" in page and "40%" in page


def _fields(page: str) -> dict[str, str]:
    """The message page's fields, as texts; and each field's links under "NAME links"."""
    out: dict[str, str] = {}
    for name, value in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", page, re.S):
        out[name] = re.sub(r"<[^>]+>", "", value)
        out[name + " links"] = " ".join(re.findall(r'href="/message/(\d+)"', value))
    return out


def test_a_workflow_job_links_its_parents_and_children_and_shows_the_workflow_state(
        db: liteq.Database) -> None:
    @db.task(name="add", store_result=True)
    def add(x: int, y: int = 1) -> int:
        return x + y

    last = chain(add.s(1), add.s(), add.s()).delay()
    middle = last.parents[0]
    first = middle.parents[0]
    alone = add.delay(5)
    with served(db) as client:
        before = _fields(client.get(f"/message/{middle.id}").text)
        assert before["parents links"] == str(first.id)
        assert before["parents"] == f"{first.id} (not ended)"
        assert before["children links"] == str(last.id)
        assert before["workflow links"] == str(first.id)  # a workflow's id is its first job's
        assert before["workflow"].startswith(f"{first.id} running (")
        assert "parents" not in _fields(client.get(f"/message/{alone.id}").text)
        drain(db)
        after = _fields(client.get(f"/message/{middle.id}").text)
        assert after["parents"] == f"{first.id} (done)"
        assert after["workflow"] == f"{first.id} done (3 done)"
        assert _fields(client.get(f"/message/{last.id}").text)["children"] == "-"


def test_dead_letters_are_grouped_by_error(db: liteq.Database) -> None:
    _fill(db)
    with served(db) as client:
        page = client.get("/dead/emails").text
    groups = {r[0]: int(r[1]) for r in table_rows(page, "groups")}
    assert groups == {"SMTP: 550 mailbox unavailable": 2, "timeout": 1}


def _act(client: Client, page_path: str, action: str, **fields: Any) -> Any:
    token = csrf_of(client.get(page_path).text)
    return client.post(f"/action/{action}", {"csrf": token, "next": page_path, **fields})


def test_redrive_of_one_of_the_selected_and_of_all_matching_an_error(db: liteq.Database) -> None:
    _fill(db)
    smtp, smtp2, timeout = _dead_ids(db, "emails")
    with served(db, allow_actions=True) as client:
        answer = _act(client, "/dead/emails", "redrive", queue="emails", ids=timeout)
        assert answer.status == 303 and "redrove+1" in answer.headers["Location"]
        assert _state(db, timeout) == "ready"
        answer = _act(client, "/dead/emails", "redrive", queue="emails", match="error",
                      error="SMTP: 550 mailbox unavailable")
        assert answer.status == 303
    assert [_state(db, m) for m in (smtp, smtp2)] == ["ready", "ready"]
    assert db.queue("emails").stats()["dead"] == 0


def test_purge_of_the_selected_and_of_every_dead_message(db: liteq.Database) -> None:
    _fill(db)
    smtp, smtp2, timeout = _dead_ids(db, "emails")
    ready_before = db.queue("emails").stats()["ready"]
    with served(db, allow_actions=True) as client:
        page = "/dead/emails"
        token = csrf_of(client.get(page).text)
        answer = client.post("/action/purge", [("csrf", token), ("next", page),
                                               ("queue", "emails"), ("ids", smtp),
                                               ("ids", timeout)])
        assert answer.status == 303
        assert [_state(db, m) for m in (smtp, smtp2, timeout)] == [None, "dead", None]
        assert _act(client, page, "purge", queue="emails", match="all").status == 303
    st = db.queue("emails").stats()
    assert st["dead"] == 0 and st["ready"] == ready_before


def test_an_action_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(
        db: liteq.Database) -> None:
    _fill(db)
    dead = _dead_ids(db, "emails")
    with served(db, allow_actions=True) as client:
        client.get("/dead/emails")  # has its cookie
        fields = {"queue": "emails", "match": "all", "next": "/"}
        assert client.post("/action/redrive", fields).status == 403
        assert client.post("/action/redrive", {**fields, "csrf": "0" * 64}).status == 403
        other = Client(client.base)  # another browser's token does not fit this cookie
        token = csrf_of(other.get("/dead/emails").text)
        assert client.post("/action/redrive", {**fields, "csrf": token}).status == 403
        refused = client.post("/action/purge", {**fields, "csrf": token})
        assert refused.status == 403 and "CSRF" in refused.text
    assert _dead_ids(db, "emails") == dead


def test_a_read_only_dashboard_shows_no_forms_and_refuses_every_action(
        db: liteq.Database) -> None:
    _fill(db)
    db.schedule("nightly", cron="0 3 * * *", queue="emails", payload=1)
    dead = _dead_ids(db, "emails")
    with served(db) as client:
        page = client.get("/dead/emails").text
        assert 'method="post"' not in page
        for action, fields in (("redrive", {"queue": "emails", "match": "all"}),
                               ("purge", {"queue": "emails", "match": "all"}),
                               ("schedule-pause", {"schedule": "nightly"})):
            answer = client.post(f"/action/{action}", {**fields, "csrf": "x"})
            assert answer.status == 403 and "read-only" in answer.text
    assert _dead_ids(db, "emails") == dead
    assert db.schedules()[0].state == "active"


def test_without_actions_liteq_web_opens_the_database_read_only_and_a_write_is_refused(
        db: liteq.Database, db_target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(db)
    dead = _dead_ids(db, "emails")
    opened: dict[bool, bool] = {}

    def serve_once(database: liteq.Database, host: str, port: int, **options: Any) -> None:
        # Stands in for the serving loop: what it would serve is the database opened here.
        opened[options["allow_actions"]] = database.read_only
        if database.read_only:
            with pytest.raises(liteq.LiteqError):
                database.queue("emails").redrive()

    monkeypatch.setattr(liteq.web, "serve", serve_once)
    for flags in ([], ["--allow-actions"]):
        result = CliRunner().invoke(cli, ["--db", db_target, "web", "--port", "0", *flags],
                                    prog_name="liteq")
        assert result.exit_code == 0, result.output
    assert opened == {False: True, True: False}
    assert _dead_ids(db, "emails") == dead


def test_every_page_works_on_a_read_only_database_and_actions_need_a_writable_one(
        db: liteq.Database, db_target: str) -> None:
    _fill(db)
    db.schedule("nightly", cron="0 3 * * *", queue="emails", payload=1)
    db.topic("orders").subscribe("billing", pattern="order.#")
    dead = _dead_ids(db, "emails")[0]
    looking = liteq.connect(db_target, read_only=True)
    try:
        with served(looking) as client:
            for path in ("/", "/?range=week", "/queue/emails", "/queue/emails?state=dead",
                         f"/message/{dead}", "/dead", "/dead/emails", "/schedules",
                         "/schedule/nightly", "/topics", "/workers", "/metrics"):
                answer = client.get(path)
                assert answer.status == 200, (path, answer.text)
        with pytest.raises(liteq.InvalidArgument, match="needs a database open for writing"):
            app(looking, allow_actions=True)
    finally:
        looking.close()


def test_a_schedule_is_paused_resumed_and_run_now(db: liteq.Database) -> None:
    db.schedule("nightly", cron="0 3 * * *", tz="Europe/Berlin", queue="reports", payload=7)
    with served(db, allow_actions=True) as client:
        page = client.get("/schedules").text
        assert "03:00" in page or "3:00" in page  # the timing in words
        assert _act(client, "/schedules", "schedule-pause", schedule="nightly").status == 303
        assert db.schedules()[0].state == "paused"
        assert _act(client, "/schedules", "schedule-resume", schedule="nightly").status == 303
        assert db.schedules()[0].state == "active"
        answer = _act(client, "/schedule/nightly", "schedule-run", schedule="nightly")
        assert answer.status == 303
        assert db.queue("reports").stats()["ready"] == 1
        history = table_rows(client.get("/schedule/nightly").text, "runs")
    assert len(history) == 1


def test_topics_show_their_subscriptions_patterns_and_depths(db: liteq.Database) -> None:
    orders = db.topic("orders")
    orders.subscribe("billing", pattern="order.*.eu")
    orders.subscribe("audit", pattern="#")
    orders.publish({"id": 1}, key="order.created.eu")
    orders.publish({"id": 2}, key="order.created.us")
    with served(db) as client:
        rows = table_rows(client.get("/topics").text, "topics")
    by_pattern = {r[2]: r for r in rows}
    assert by_pattern["order.*.eu"][3] == "1" and by_pattern["#"][3] == "2"


def test_the_workers_page_shows_each_worker_with_its_running_job(db: liteq.Database) -> None:
    q = db.queue("work")
    q.put("job")
    msg = q.get()
    assert msg is not None
    reg = Registration(db, "worker", queues=["work"], pool="thread", concurrency=4,
                       running=lambda: [msg.id])
    reg.start()
    try:
        with served(db) as client:
            rows = table_rows(client.get("/workers").text, "workers")
            overview = client.get("/").text
    finally:
        reg.stop()
    assert len(rows) == 1
    assert rows[0][0] == reg.id and rows[0][2] == "alive" and str(msg.id) in rows[0][8]
    assert '<strong id="workers-alive">1</strong>' in overview


def test_metrics_are_served_as_render_gives_them(db: liteq.Database) -> None:
    _fill(db)
    with served(db) as client:
        answer = client.get("/metrics")
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
    age = "liteq_queue_oldest_ready_age_seconds"
    assert [ln for ln in answer.text.splitlines() if not ln.startswith(age)] == \
        [ln for ln in render(db).splitlines() if not ln.startswith(age)]


def test_with_a_token_every_request_needs_it(db: liteq.Database) -> None:
    db.queue("q")
    with served(db, token="s3cret") as client:
        assert client.get("/").status == 401
        assert client.get("/metrics").status == 401
        assert client.get("/", headers={"X-Liteq-Token": "wrong"}).status == 401
        assert client.get("/", headers={"X-Liteq-Token": "s3cret"}).status == 200
        assert client.get("/", headers={"Authorization": "Bearer s3cret"}).status == 200
        answer = client.get("/queue/q?token=s3cret")
        assert answer.status == 303 and "token" not in answer.headers["Location"]
        assert client.get("/queue/q").status == 200  # the cookie carries it now


def test_liteq_web_refuses_a_non_local_bind_without_a_token(db_target: str,
                                                            db: liteq.Database) -> None:
    db.queue("q")
    result = CliRunner().invoke(cli, ["--db", db_target, "web", "--host", "0.0.0.0",
                                      "--port", "0"], prog_name="liteq")
    assert result.exit_code == 1
    assert "Error: --host 0.0.0.0 can be reached from other machines" in result.output
    assert "Traceback" not in result.output


def test_a_post_from_another_origin_is_refused_even_with_the_token(db: liteq.Database) -> None:
    _fill(db)
    dead = _dead_ids(db, "emails")
    with served(db, allow_actions=True) as client:
        token = csrf_of(client.get("/dead/emails").text)
        answer = client.post("/action/redrive",
                             {"csrf": token, "queue": "emails", "match": "all", "next": "/"},
                             headers={"Origin": "http://evil.example"})
    assert answer.status == 403
    assert _dead_ids(db, "emails") == dead


def test_mounted_under_a_prefix_every_link_and_redirect_keeps_it(db: liteq.Database) -> None:
    _fill(db)
    application = app(db, allow_actions=True)

    def call(method: str, path: str, body: bytes = b"", cookie: str = "") -> tuple[str, Any, str]:
        route, _, query = path.partition("?")
        environ = {"REQUEST_METHOD": method, "SCRIPT_NAME": "/ops/liteq", "PATH_INFO": route,
                   "QUERY_STRING": query, "CONTENT_LENGTH": str(len(body)),
                   "HTTP_COOKIE": cookie, "wsgi.input": io.BytesIO(body),
                   "wsgi.errors": sys.stderr}
        seen: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            seen.update(status=status, headers=dict(headers))

        text = b"".join(application(environ, start_response)).decode()
        return seen["status"], seen["headers"], text

    status, headers, page = call("GET", "/dead/emails")
    assert status == "200 OK"
    hrefs = re.findall(r'(?:href|action|formaction)="([^"]+)"', page)
    assert hrefs and all(h.startswith("/ops/liteq/") or h.startswith("data:") for h in hrefs)
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "Path=/ops/liteq" in headers["Set-Cookie"]
    body = urlencode({"csrf": csrf_of(page), "queue": "emails", "match": "all",
                      "next": "/dead/emails"}).encode()
    status, headers, _ = call("POST", "/action/redrive", body, cookie)
    assert status == "303 See Other"
    assert headers["Location"].startswith("/ops/liteq/dead/emails?done=")
    assert db.queue("emails").stats()["dead"] == 0
