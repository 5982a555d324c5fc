"""The Django app ``liteq.contrib.django``: it brings the ``liteq_worker`` command."""

from __future__ import annotations

from django.apps import AppConfig


class LiteqConfig(AppConfig):
    """liteq's Django app (label ``liteq``)."""

    name = "liteq.contrib.django"
    label = "liteq"
    verbose_name = "liteq"
