"""Make docs/dashboard.png: the dashboard's overview with a few queues, in headless
Debian chromium (the README shows it).

    python tools/dashboard_screenshot.py [--out docs/dashboard.png]

It builds a throwaway database: some queues with ready, delayed, leased, dead and done
messages, a worker in the registry, and an hour of per-minute history (written through
the backend's own ``add_history``, as a worker's history hook does) so the charts have
something to draw. Needs /usr/bin/chromium, /usr/bin/chromedriver and selenium (the test
extra).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
from pathlib import Path

import liteq
from liteq.backends.registry import HistoryRow
from liteq.registry import Registration
from liteq.web.server import make

ROOT = Path(__file__).resolve().parent.parent


def build(path: str) -> tuple[liteq.Database, Registration]:
    """A database that looks like a small app's at work."""
    db = liteq.connect(path)
    emails = db.queue("emails", max_attempts=1, retention=3600)
    emails.put_many([{"to": f"user{n}@example.com"} for n in range(240)])
    for _ in range(37):
        emails.get().ack()  # type: ignore[union-attr]
    for n in range(5):
        emails.get().fail("SMTP 550: mailbox unavailable" if n % 2 else "timeout")  # type: ignore[union-attr]
    running = [emails.get(), emails.get()]
    thumbs = db.queue("thumbnails")
    thumbs.put_many([{"image": n} for n in range(1200)])
    thumbs.put_many([{"image": n} for n in range(30)], delay=900)
    db.queue("reports").put({"week": 48}, delay=3 * 3600)
    db.topic("orders").subscribe("billing", pattern="order.*.eu").put_many([{"id": 1}] * 12)
    db.schedule("nightly-report", cron="0 3 * * *", tz="Europe/Berlin", queue="reports",
                payload={"kind": "nightly"})
    now_minute = int(db.clock() // 60)
    rows = []
    for k in range(60):
        minute = now_minute - 59 + k
        wave = 1 + math.sin(k / 6)
        for name, scale in (("emails", 6), ("thumbnails", 20)):
            qid = db.queue(name).id
            put = int(scale * (1.2 + wave))
            acked = int(scale * (1.0 + wave * 0.9))
            rows.append(HistoryRow(qid, minute, "", put, acked, 0, 0, 0, 0.0, 0.0))
    db.backend.add_history(rows)
    worker = Registration(db, "worker", queues=["emails", "thumbnails"], pool="thread",
                          concurrency=8, running=lambda: [m.id for m in running if m])
    worker.start()
    return db, worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as tmp:
        db, worker = build(str(Path(tmp) / "app.db"))
        server = make(db, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1280,760",
                    f"--user-data-dir={tmp}/profile"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"),
                                  options=options)
        try:
            driver.get(f"http://127.0.0.1:{server.server_port}/")
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(args.out)
        finally:
            driver.quit()
            server.shutdown()
            server.server_close()
            worker.stop()
            db.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
