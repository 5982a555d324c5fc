"""Depth and throughput over the last hour, day or week, from the per-minute history
(``liteq.history``), drawn as inline SVG (no script, no asset from anywhere).

The history keeps counts, not depths: the depth line is worked back from the depth now,
taking off each bucket's puts and adding back its acks and deaths (so it is an estimate
when messages were purged or moved meanwhile; it never goes below zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..backends.registry import HistorySums
from .templates import h

__all__ = ["RANGES", "Series", "series", "svg_chart"]

#: A chart's range: (buckets, minutes per bucket, label). The day and the week are per
#: hour: they read the history's hourly roll-ups (24 and 168 rows per queue), so their
#: cost does not grow with the 1,440 minutes a day holds per queue.
RANGES: dict[str, tuple[int, int, str]] = {
    "hour": (60, 1, "last hour, per minute"),
    "day": (24, 60, "last day, per hour"),
    "week": (168, 60, "last week, per hour"),
}


@dataclass
class Series:
    """Per-bucket figures, oldest first."""

    starts: list[int]
    put: list[int]
    acked: list[int]
    dead: list[int]
    depth: list[int]
    #: Deliveries given back for another attempt (retried, nacked, lease expired).
    failed: list[int]


def series(sums: Sequence[HistorySums], depth_now: int, now_minute: int, span: str) -> Series:
    """Place *sums* (``history_sums`` with *span*'s width) in *span*'s buckets, ending
    with the bucket that holds *now_minute*."""
    buckets, width, _ = RANGES[span]
    last = now_minute // width
    first = last - buckets + 1
    put = [0] * buckets
    acked = [0] * buckets
    dead = [0] * buckets
    failed = [0] * buckets
    for r in sums:
        k = r.start // width - first
        if 0 <= k < buckets:
            put[k] += r.put
            acked[k] += r.acked
            dead[k] += r.dead
            failed[k] += r.failed
    depth = [0] * buckets
    level = depth_now
    for k in range(buckets - 1, -1, -1):
        depth[k] = max(0, level)
        level -= put[k] - acked[k] - dead[k]
    return Series([(first + k) * width for k in range(buckets)], put, acked, dead, depth,
                  failed)


def _points(values: Sequence[int], top: float, w: int, hgt: int) -> str:
    n = max(1, len(values) - 1)
    return " ".join(f"{i * w / n:.1f},{hgt - (v / top) * hgt:.1f}" for i, v in enumerate(values))


def svg_chart(title: str, lines: Sequence[tuple[str, str, Sequence[int]]],
              span: str) -> str:
    """An SVG line chart: *lines* are (label, css class, values)."""
    w, hgt = 600, 120
    top = max([1] + [max(v, default=0) for _, _, v in lines])
    paths = "".join(
        f'<polyline class="{h(css)}" fill="none" points="{_points(v, top, w, hgt)}">'
        f"<title>{h(label)}</title></polyline>"
        for label, css, v in lines)
    legend = " ".join(f'<span class="key {h(css)}">{h(label)}: {sum(v):,}</span>'
                      if css != "depth" else
                      f'<span class="key {h(css)}">{h(label)} now: {v[-1] if v else 0:,}</span>'
                      for label, css, v in lines)
    return (f'<figure class="chart"><figcaption>{h(title)} <small>({h(RANGES[span][2])}, '
            f'max {top:,})</small></figcaption>'
            f'<svg viewBox="0 0 {w} {hgt}" width="100%" height="{hgt}" '
            f'preserveAspectRatio="none" role="img" aria-label="{h(title)}">'
            f'<line class="axis" x1="0" y1="{hgt}" x2="{w}" y2="{hgt}"></line>{paths}</svg>'
            f"<div>{legend}</div></figure>")
