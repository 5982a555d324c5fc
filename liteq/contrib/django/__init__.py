"""liteq for Django's task framework (``django.tasks``, or the ``django-tasks``
backport before Django 6): a backend, and a Django app with the ``liteq_worker``
management command.

::

    INSTALLED_APPS = [..., "liteq.contrib.django"]
    TASKS = {"default": {"BACKEND": "liteq.contrib.django.LiteqBackend",
                         "OPTIONS": {"database": BASE_DIR / "liteq.db"}}}

    python manage.py liteq_worker --concurrency 4

The backend is :mod:`.backend`, its options :mod:`.config`, the worker side
:mod:`.worker`. Names are imported on first use, so that listing the app in
``INSTALLED_APPS`` imports nothing of Django's task API before Django is set up.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LiteqBackend", "LiteqTask"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
