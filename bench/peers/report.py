"""Tables (terminal and Markdown) and the chart for ``bench/compare.py``'s results; the
rows table and the terminal table are ``bench/bench_postgres.py``'s too."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from typing import Any

THROUGHPUT_UNITS = ("msgs/s", "tasks/s")


def _cores(value: float | None) -> float:
    """Other processes' CPU in cores; NaN when unknown, rounding noise below 0 shown as 0."""
    if value is None or value != value:
        return float("nan")
    return max(0.0, value)


def median_of(values: list[Any]) -> float | None:
    nums = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(nums) if nums else None


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("msgs/s", "tasks/s"):
        return f"{value:,.0f}"
    if unit == "µs":
        return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.2f}"
    return f"{value:.2f}%"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


#: A column after the systems' medians: its heading and its cell for a row.
Column = tuple[str, Callable[[dict[str, Any]], str]]


def loads(result: dict[str, Any], which: str = "load_before") -> str:
    """The 1-minute load average at the start (or end) of each run."""
    return ", ".join(f"{r[which][0]:.2f}" for r in result["run_log"])


def rows_table(result: dict[str, Any], systems: list[str], columns: list[Column]) -> list[str]:
    """The Markdown table of every row (the last column is text, the others numbers),
    then the reasons for its n/a cells."""
    head = ["workload", "unit"] + systems + [name for name, _ in columns]
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join(["---", "---"] + ["---:"] * (len(systems) + len(columns) - 1)
                          + ["---"]) + "|"]
    notes: dict[str, str] = {}
    for row in result["rows"]:
        cells = []
        for s in systems:
            v = row["median"][s]
            if v is None and row["na"].get(s):
                reason = row["na"][s]
                mark = notes.setdefault(reason, f"[{len(notes) + 1}]")
                cells.append(f"n/a{mark}")
            else:
                cells.append(fmt(v, row["unit"]))
        out.append("| " + " | ".join([row["label"], row["unit"]] + cells
                                     + [cell(row) for _, cell in columns]) + " |")
    out.append("")
    if notes:
        out.append("n/a: " + "; ".join(f"{m} {reason}" for reason, m in notes.items()) + ".")
        out.append("")
    return out


def print_rows(result: dict[str, Any], systems: list[str], column: int,
               ratios: list[Column]) -> None:
    """The terminal table: medians *column* wide, the *ratios*, then the target."""
    width = 36
    print()
    print(f"{'workload':<{width}}" + "".join(f"{s:>{column}}" for s in systems)
          + "".join(f"{name:>9}" for name, _ in ratios))
    for row in result["rows"]:
        cells = "".join(f"{fmt(row['median'][s], row['unit']):>{column}}" for s in systems)
        print(f"{row['label'] + ' (' + row['unit'] + ')':<{width}.{width}}{cells}"
              + "".join(f"{cell(row):>9}" for _, cell in ratios)
              + f"  {row.get('target', '')}")
    print()


def ratio(key: str) -> Callable[[dict[str, Any]], str]:
    """The cell of ratio *key* of a row, as a percentage."""
    return lambda row: pct(row.get(key))


def markdown(result: dict[str, Any], systems: list[str]) -> str:
    meta, st = result["meta"], result["settings"]
    out = [f"# liteq against raw apsw and its peers — synchronous={st['sync']}", ""]
    out.append(f"Measured {meta['date']} with `python bench/compare.py --sync {st['sync'].lower()}"
               f" --runs {st['runs']}` ({meta['wall_s'] / 60:.1f} min). Each cell is the median "
               f"of {st['runs']} run(s); every system on fresh temporary files, WAL, "
               f"synchronous={st['sync']} read back from its own connection.")
    out.append("")
    out.append(f"Machine: {meta['cpu']}, {meta['cores']} cores, {meta['platform']}, Python "
               f"{meta['python']}, temp files on {meta['filesystem']}. Shared machine (other "
               f"engineers' test runs): 1-minute load average at the start of each run "
               + loads(result) + " (it counts this benchmark's own processes too); CPU used by other "
               "processes during each run, in cores: "
               + ", ".join(f"{_cores(r.get('other_cpu_cores')):.2f}"
                           for r in result["run_log"]) + ".")
    out.append("")
    out.append("Versions: " + "; ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    out.append("")
    out.append(f"Sizes: N = {st['n']:,} per-message and multi-process messages; batch rows "
               f"{st['batch_n']:,} messages in transactions of {st['batch']}; claim time = median "
               f"of up to {st['claims_per_depth']:,} single claims (at most "
               f"{st['claim_budget_s']:.0f} s) per depth; {st['latency_samples']} latency "
               f"samples; {st['idle_s']:.0f} s idle; {st['tasks_n']:,} tasks. Payload "
               f"`{json.dumps(st['payload'])}`.")
    out.append("")
    out.append("Ratios are liteq's speed relative to the other system (above 100%: liteq is "
               "faster, or lower for times and CPU).")
    out.append("")
    out += rows_table(result, systems, [
        ("liteq / raw-minimal", ratio("liteq_vs_raw_minimal")),
        ("liteq / raw (parity)", ratio("liteq_vs_raw")),
        ("liteq / best peer", lambda row: pct(row.get("liteq_vs_best_peer"))
         + (f" ({row['best_peer']})" if row.get("best_peer") else "")),
        ("DESIGN target", lambda row: row.get("target", "")),
    ])
    out.append("## Duplicates and losses (multi-process rows, every run)")
    out.append("")
    out.append("Each consumer records the sequence number of every message it got; a number "
               "seen twice is a duplicate, one never seen is lost. Also shown: the producer's "
               "own put rate during the run and the largest size of the `-wal` file during it "
               "(medians over runs).")
    out.append("")
    out.append("| workload | system | duplicates per run | lost per run | errors "
               "| producer put/s | largest WAL |")
    out.append("|---|---|---|---|---:|---:|---:|")
    for key, per in result["correctness"].items():
        for s, c in per.items():
            rate = median_of(c["producer_rate"])
            wal = median_of(c["wal_mb"])
            out.append(f"| {key.replace('mp_', '1 producer + ')} consumers | {s} | "
                       f"{', '.join(map(str, c['duplicates']))} | {', '.join(map(str, c['lost']))}"
                       f" | {c['errors']} | {fmt(rate, 'msgs/s')} | "
                       f"{'?' if wal is None else f'{wal:,.1f} MB'} |")
    out.append("")
    out.append("## Systems and their settings")
    out.append("")
    out.append("| system | version | get / ack | synchronous by default | how it is set "
               "| measured in this run | payload codec | cross-process wake-up |")
    out.append("|---|---|---|---|---|---|---|---|")
    for s, info in result["systems"].items():
        m = info["measured"] or {}
        out.append(f"| {s} | {info['version']} | {info['semantics']} | "
                   f"{info['default_synchronous']} | {info['how_synchronous_is_set']} | "
                   f"{m.get('synchronous', '?')}, {m.get('journal_mode', '?')} | {info['codec']} "
                   f"| {'yes' if info['cross_process_wakeup'] else 'no (polled)'} |")
    out.append("")
    return "\n".join(out)


def print_table(result: dict[str, Any], systems: list[str]) -> None:
    print_rows(result, systems, 14, [("lq/min", ratio("liteq_vs_raw_minimal")),
                                     ("lq/raw", ratio("liteq_vs_raw")),
                                     ("lq/peer", ratio("liteq_vs_best_peer"))])
    for key, per in result["correctness"].items():
        for s, c in per.items():
            print(f"{key:<6} {s:<14} duplicates {c['duplicates']}  lost {c['lost']}  "
                  f"errors {c['errors']}  producer {fmt(median_of(c['producer_rate']), 'msgs/s')}"
                  f"/s  largest WAL {median_of(c['wal_mb']) or 0:,.1f} MB")


SHORT = {"put": "put", "get_ack": "get+ack", "put_batch": "batch put", "get_ack_batch":
         "batch get+ack", "mp_2": "1 prod +\n2 cons", "mp_4": "1 prod +\n4 cons",
         "tasks": "tasks,\n2 workers", "lat_p50": "p50 (ms)", "lat_p99": "p99 (ms)",
         "idle_cpu": "idle CPU\n(% core)"}


def chart(out_dir: str) -> str | None:
    """Draw compare.png from every compare-<sync>.json in *out_dir*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = [(s, os.path.join(out_dir, f"compare-{s}.json")) for s in ("normal", "full")]
    found = [(s, p) for s, p in found if os.path.exists(p)]
    if not found:
        return None
    panels = [
        ("per second (higher is better)", lambda r: r["unit"] in THROUGHPUT_UNITS),
        ("claim time, µs (lower is better)", lambda r: r["key"].startswith("claim_")),
        ("idle consumer in another process\n(lower is better)",
         lambda r: r["key"] in ("lat_p50", "lat_p99", "idle_cpu")),
    ]
    fig, axes = plt.subplots(len(found), len(panels), figsize=(17, 5.2 * len(found)),
                             squeeze=False, gridspec_kw={"width_ratios": [3.2, 1.2, 1.2]})
    colors = {"liteq": "#1f77b4", "raw-minimal": "#404040", "raw": "#7f7f7f", "huey": "#ff7f0e",
              "persist-queue": "#2ca02c", "litequeue": "#d62728"}
    for i, (sync, path) in enumerate(found):
        with open(path) as f:
            data = json.load(f)
        systems = list(data["systems"])
        depths = data["settings"]["depths"]
        for j, (title, pick) in enumerate(panels):
            ax = axes[i][j]
            rows = [r for r in data["rows"] if pick(r)]
            width = 0.8 / len(systems)
            for k, s in enumerate(systems):
                xs = [x + (k - (len(systems) - 1) / 2) * width for x in range(len(rows))]
                vals = [r["median"][s] or 0 for r in rows]
                ax.bar(xs, vals, width, label=s, color=colors.get(s))
                for x, r in zip(xs, rows, strict=True):
                    if r["median"][s] is None:
                        ax.text(x, 0.02, "n/a", rotation=90, ha="center", va="bottom",
                                fontsize=7, color=colors.get(s),
                                transform=ax.get_xaxis_transform())
            ax.set_yscale("log")
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels(
                [f"{depths[int(r['key'][-1])]:,}\nqueued" if r["key"].startswith("claim_")
                 else SHORT.get(r["key"], r["key"]) for r in rows], fontsize=8)
            ax.set_title(f"{sync.upper()}: {title}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8, ncols=len(systems), loc="upper right")
    with open(found[0][1]) as f:
        meta = json.load(f)["meta"]
    fig.suptitle(f"liteq, raw apsw and peers, same machine and synchronous setting "
                 f"(medians; {meta['cores']} cores; tables in compare-*.md)", fontsize=11)
    fig.tight_layout()
    out = os.path.join(out_dir, "compare.png")
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


