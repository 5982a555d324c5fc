"""A real Django project for the Django backend's tests, written to a temporary
directory: settings, a ``shop`` app with tasks and views, ``manage.py``.

The pytest process sets Django up on it once (``django_project``, session-wide); each
test points the task backend at its own liteq database (``django_target``: the
``db_target`` of the engine under test, through ``override_settings``), and starts
workers as real ``manage.py liteq_worker`` processes given that database through
``$LITEQ_DJANGO_DB``. Django's own database is a SQLite file in the project directory. Registered as a
plugin in ``tests/conftest.py``; without Django installed its fixtures skip.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

FILES = {
    "manage.py": """
        import os
        import sys

        if __name__ == "__main__":
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
            from django.core.management import execute_from_command_line

            execute_from_command_line(sys.argv)
    """,
    "mysite/__init__.py": "",
    "mysite/settings.py": """
        import json
        import os
        from pathlib import Path

        BASE_DIR = Path(__file__).resolve().parent.parent
        SECRET_KEY = "liteq-tests"
        DEBUG = True
        ALLOWED_HOSTS = ["*"]
        ROOT_URLCONF = "mysite.urls"
        USE_TZ = True
        INSTALLED_APPS = ["django.contrib.contenttypes", "liteq.contrib.django", "shop"]
        try:
            import django.tasks  # noqa: F401 - Django >= 6 has the task API itself
        except ImportError:
            INSTALLED_APPS.append("django_tasks")
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                                 "NAME": BASE_DIR / "django.sqlite3"}}
        TASKS = {
            "default": {
                "BACKEND": "liteq.contrib.django.LiteqBackend",
                "QUEUES": ["default", "other"],
                "OPTIONS": {
                    "database": os.environ.get("LITEQ_DJANGO_DB", str(BASE_DIR / "liteq.db")),
                    "max_attempts": 3,
                    "backoff": {"base": 0.05, "factor": 1, "jitter": 0},
                    "schedules": json.loads(os.environ.get("LITEQ_DJANGO_SCHEDULES", "{}")),
                },
            },
        }
        LOGGING = {"version": 1, "disable_existing_loggers": False,
                   "root": {"level": "WARNING"}}
    """,
    "mysite/urls.py": """
        from django.urls import path

        from shop import views

        urlpatterns = [
            path("add", views.enqueue_add),
            path("result/<str:result_id>", views.result),
            path("add-then-fail", views.enqueue_then_fail),
            path("add-in-transaction", views.enqueue_in_transaction),
        ]
    """,
    "shop/__init__.py": "",
    "shop/apps.py": """
        import os

        from django.apps import AppConfig


        class ShopConfig(AppConfig):
            name = "shop"

            def ready(self):
                from liteq.contrib.django.api import task_finished, task_started

                def note(what):
                    def receiver(sender, task_result, **kwargs):
                        log = os.environ.get("SIGNAL_LOG")
                        if log:
                            with open(log, "a") as f:
                                f.write(f"{what} {task_result.id} {task_result.status} "
                                        f"{len(task_result.worker_ids)}\\n")
                    return receiver

                self.receivers = [note("started"), note("finished")]
                task_started.connect(self.receivers[0])
                task_finished.connect(self.receivers[1])
    """,
    "shop/tasks.py": """
        import os
        import time
        from pathlib import Path

        try:
            from django.tasks import task
        except ImportError:
            from django_tasks import task


        @task()
        def add(a, b):
            return a + b


        @task()
        def explode(message):
            raise ValueError(message)


        @task()
        def record(log, label):
            with open(log, "a") as f:
                f.write(label + "\\n")


        @task(takes_context=True)
        def slow_first_time(context, marker):
            if context.attempt == 1:
                Path(marker).write_text(str(os.getpid()))
                time.sleep(60)
            return context.attempt


        @task(key="one-at-a-time")
        def singleton(n):
            return n


        @task()
        async def add_async(a, b):
            return a + b


        @task(takes_context=True)
        def whoami(context):
            return [context.attempt, context.task_result.id, context.task_result.status]


        @task(max_attempts=1, key=lambda args, kwargs: args[0])
        def once_per_name(name):
            raise ValueError(name)


        @task()
        def pair(a, b):
            return (a, {"b": b})
    """,
    "shop/views.py": """
        from django.db import transaction
        from django.http import JsonResponse

        from shop import tasks


        def enqueue_add(request):
            result = tasks.add.enqueue(int(request.GET["a"]), int(request.GET["b"]))
            return JsonResponse({"id": result.id, "status": result.status})


        def result(request, result_id):
            found = tasks.add.get_result(result_id)
            value = found.return_value if found.status == "SUCCESSFUL" else None
            return JsonResponse({"status": found.status, "value": value})


        def enqueue_then_fail(request):
            with transaction.atomic():
                tasks.add.enqueue(1, 2)
                raise RuntimeError("the view failed: its transaction rolls back")


        def enqueue_in_transaction(request):
            with transaction.atomic():
                result = tasks.add.enqueue(1, 2)
                inside = result.id
            return JsonResponse({"inside": inside, "after": result.id})
    """,
}

#: Bound for anything awaited: waits end as soon as the thing happens.
PATIENCE = 60.0


def write_project(root: Path) -> Path:
    """Write the project under *root*; return its directory (where manage.py is)."""
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.fixture(scope="session")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project, with Django set up on it in this process (once per session)."""
    pytest.importorskip("django")
    import django
    from django.conf import settings

    if settings.configured:
        root = Path(sys.modules["mysite.settings"].BASE_DIR)
        return root
    root = write_project(tmp_path_factory.mktemp("djangoproject"))
    sys.path.insert(0, str(root))
    os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
    django.setup()
    return root


@pytest.fixture
def django_target(django_project: Path, db_target: str) -> Iterator[str]:
    """This test's liteq database (*db_target*), made the backend's for the test."""
    from django.conf import settings
    from django.test import override_settings

    from liteq.contrib.django.registry import close_databases

    tasks = json.loads(json.dumps(settings.TASKS))
    tasks["default"]["OPTIONS"]["database"] = db_target
    with override_settings(TASKS=tasks):
        yield db_target
    close_databases()


def worker_env(target: str, **extra: str) -> dict[str, str]:
    """The environment of a worker process on *target*."""
    env = dict(os.environ, LITEQ_DJANGO_DB=target, DJANGO_SETTINGS_MODULE="mysite.settings")
    env.update(extra)
    return env


def start_worker(project: Path, target: str, *args: str, log: Path | None = None,
                 **env: str) -> subprocess.Popen[bytes]:
    """``python manage.py liteq_worker ARGS`` in a new process, on *target*."""
    out: Any = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen([sys.executable, "manage.py", "liteq_worker", *args],
                            cwd=project, env=worker_env(target, **env), stdout=out, stderr=out)


@contextmanager
def running_worker(project: Path, target: str, *args: str, **env: str
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """A worker process for the duration of the block (SIGTERM, then waited for)."""
    proc = start_worker(project, target, "--grace", "0", *args, **env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(PATIENCE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
