"""A queue's options are declared once (``liteq.options.QUEUE_OPTIONS``): every place
that names them -- ``Database.queue``'s keywords and docstring, ``QueueConfig``, the
stored record and the engine's columns, a new queue's defaults, the ``queue
create|config`` options and what they show -- agrees with that declaration."""

from __future__ import annotations

import dataclasses
import inspect
import re

import click
import pytest
from click.testing import CliRunner

import liteq
from liteq.backends.records import QueueRecord
from liteq.cli import cli
from liteq.cli_queues import CLI_TYPES, SHOWN, queue_config, queue_create
from liteq.options import (
    QUEUE_OPTIONS,
    STATE_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    QueueConfig,
    default_columns,
    option_columns,
)

NAMES = [o.name for o in QUEUE_OPTIONS]
COLUMNS = {c for o in QUEUE_OPTIONS for c in o.columns} | set(SUBSCRIPTION_COLUMNS)
#: Columns of the queues table that are the engine's bookkeeping, not options.
BOOKKEEPING = {"id", "name", "depth", "enqueued", "finished", "created_at",
               "tokens", "refilled_at", "limited"}  # flow control's bucket and flag


def test_database_queue_takes_exactly_the_declared_options_in_order() -> None:
    params = inspect.signature(liteq.Database.queue).parameters.values()
    assert [p.name for p in params if p.kind is p.KEYWORD_ONLY] == NAMES


def test_database_queue_states_each_declared_default() -> None:
    doc = " ".join((liteq.Database.queue.__doc__ or "").split())
    for option in QUEUE_OPTIONS:
        assert option.doc in doc, option.name


def test_queue_config_has_a_field_per_option_besides_the_name_subscription_and_state() -> None:
    fields = {f.name for f in dataclasses.fields(QueueConfig)}
    assert fields == {"name", "topic", "pattern", *NAMES, *STATE_COLUMNS}


def test_the_stored_record_and_the_sqlite_table_hold_exactly_the_declared_columns(db) -> None:
    assert set(QueueRecord._fields) - {"id", "name"} == COLUMNS | set(STATE_COLUMNS)
    table = {row[1] for row in db.execute("PRAGMA table_info(queues)")}
    assert table - BOOKKEEPING == COLUMNS | set(STATE_COLUMNS)
    assert set(default_columns()) == COLUMNS


def test_a_queue_made_without_options_reads_back_the_declared_defaults(db) -> None:
    config = db.queue("plain").config
    assert {o.name: getattr(config, o.name) for o in QUEUE_OPTIONS} == {
        o.name: o.default for o in QUEUE_OPTIONS}


def test_queue_create_and_config_offer_the_declared_cli_options_in_order() -> None:
    declared = [o.cli_flag for o in QUEUE_OPTIONS if o.cli_flag]
    assert set(CLI_TYPES) == {o.name for o in QUEUE_OPTIONS if o.cli_flag}
    for command in (queue_create, queue_config):
        flags = [p.opts[0] for p in command.params
                 if isinstance(p, click.Option) and p.opts[0] in declared]
        assert flags == declared, command.name
        helps = {p.opts[0]: p.help for p in command.params
                 if isinstance(p, click.Option) and p.opts[0] in declared}
        assert helps == {o.cli_flag: o.cli_help for o in QUEUE_OPTIONS if o.cli_flag}


def test_queue_config_shows_the_declared_options_in_declared_order(db_path) -> None:
    assert set(SHOWN) <= set(NAMES)
    result = CliRunner().invoke(cli, ["--db", db_path, "queue", "create", "q", "--lease", "7"])
    assert result.exit_code == 0, result.output
    shown = re.findall(r"^\s*(\w+)\s", result.output, re.M)
    assert [n for n in shown if n in NAMES] == [n for n in NAMES if n in SHOWN]


def test_an_unknown_queue_option_is_refused_naming_the_options(db) -> None:
    with pytest.raises(liteq.InvalidArgument, match="unknown queue option.*maxdepth.*max_depth"):
        db.configure_queue("q", maxdepth=3)
    assert option_columns() == {}
