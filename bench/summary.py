"""What a benchmark's runs come to: medians and ratios over ``--runs`` runs, the
multi-process rows' checks, and the facts about the machine reported beside them
(shared by ``compare.py`` and ``bench_postgres.py``)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from collections.abc import Iterator
from typing import Any

from peers.report import median_of

HERE = os.path.dirname(os.path.abspath(__file__))


# --- combining runs -------------------------------------------------------------------------


def speed(lq: float | None, other: float | None, higher: bool) -> float | None:
    """liteq's speed relative to *other* (above 1: liteq is better)."""
    if not lq or not other:
        return None
    return lq / other if higher else other / lq


def median_rows(runs: list[dict[str, Any]], systems: list[str],
                rows: list[tuple[str, str, str, bool]]) -> Iterator[dict[str, Any]]:
    """Each row measured by any system: its per-run values, medians and n/a reasons."""
    for key, label, unit, higher in rows:
        values = {s: [r["cells"][s].get(key) for r in runs] for s in systems}
        med = {s: median_of(v) for s, v in values.items()}
        na = {s: next((r["na"][s][key] for r in runs if key in r["na"][s]), None)
              for s in systems}
        if all(v is None for v in med.values()):
            continue
        yield {"key": key, "label": label, "unit": unit, "higher_is_better": higher,
               "runs": values, "median": med, "na": na}


def combine_checks(runs: list[dict[str, Any]], systems: list[str],
                fields: list[str]) -> dict[str, Any]:
    """The multi-process rows' checks, per run (``errors`` counted over the runs)."""
    checks: dict[str, Any] = {}
    for key in ("mp_2", "mp_4"):
        per = {}
        for s in systems:
            items = [r["checks"][s].get(key) for r in runs if r["checks"][s].get(key)]
            if items:
                per[s] = {f: sum(len(i["errors"]) for i in items) if f == "errors"
                          else [i.get(f) for i in items] for f in fields}
        if per:
            checks[key] = per
    return checks


def write(result: dict[str, Any], base: str, markdown: str) -> None:
    """*result* as ``base.json`` and *markdown* as ``base.md``."""
    os.makedirs(os.path.dirname(base), exist_ok=True)
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1, default=str)
    with open(base + ".md", "w") as f:
        f.write(markdown)


# --- facts about the machine -------------------------------------------------------------------


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_commit(with_changes: bool = False) -> str:
    """This checkout's commit; *with_changes* adds the files of liteq/ changed since."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                             capture_output=True, text=True, check=True).stdout.strip()
        if not with_changes:
            return out
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                "../liteq"], cwd=HERE, capture_output=True, text=True).stdout
        changed = [line[3:] for line in dirty.splitlines()]
        return out + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem(path: str) -> str:
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mount, fstype = parts[1], parts[2]
                if path.startswith(mount) and len(mount) > len(best):
                    best, kind = mount, fstype
    except OSError:
        pass
    return kind
