"""``simkv-compare DIR``: one table, one dataset and plots for the runs of a sweep.

A Hydra multirun (``simkv -m tool_kv=drop,ttl_pin offload=none,dram``, on any launcher)
leaves one folder per run; this reads every ``summary.json`` below DIR with the
``config.json`` beside it, keeps the config keys whose values differ between runs as the row
labels (a policy section shows its registered name), and prints the metrics people compare
KV policies by: job completion time, TTFT, hit rates per tier, goodput. Runs that did not
complete (a failed job of a sweep) are listed with their error, never dropped. It writes
``compare.csv`` and ``compare.png`` into DIR, and the sweep as one Parquet dataset in
``DIR/dataset`` (simkv/metrics/dataset.py). ``--x KEY --y METRIC`` plots any summary metric
(``ttft_s.p99``, ``goodput.requests_per_busy_s``, ...) against any swept key, one line per
value of the other swept keys (or of ``--by``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from simkv.entry import guarded
from simkv.metrics.dataset import flatten, gather, overrides, summary_table, swept_value
from simkv.results import run_status

METRICS = {
    "jct_mean_s": ("sessions", "jct_s", "mean"),
    "jct_p90_s": ("sessions", "jct_s", "p90"),
    "ttft_p50_s": ("ttft_s", "p50"),
    "ttft_p99_s": ("ttft_s", "p99"),
    "e2e_p50_s": ("e2e_s", "p50"),
    "hit_rate": ("prefix_cache", "hit_rate_all"),
    "hit_hbm": ("prefix_cache", "hit_rate_hbm"),
    "hit_dram": ("prefix_cache", "hit_rate_dram"),
    "hit_disk": ("prefix_cache", "hit_rate_disk"),
    "goodput_rps": ("goodput", "requests_per_s"),
    "preemptions": ("requests", "preemptions"),
}


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def collect(root: Path) -> pd.DataFrame:
    """One row per run below ``root``: the differing config keys, then the metrics, the run's
    status and error. Runs that did not complete keep their row (status and error set,
    metrics empty): a sweep's failed jobs are listed, never dropped."""
    folders = sorted({p.parent for p in root.rglob("run.json")}
                     | {p.parent for p in root.rglob("summary.json")})
    runs = []
    for folder in folders:
        if (folder / "run.json").is_file():
            try:
                status, error = run_status(folder)
            except ValueError as exc:
                status, error = "unreadable", str(exc)
        else:  # a folder written before run.json existed
            status, error = "ok", ""
        config = folder / "config.json"
        summary = folder / "summary.json"
        if status == "ok" and not (summary.is_file() and config.is_file()):
            status, error = "incomplete", "summary.json or config.json is missing"
        flat = flatten(json.loads(config.read_text())) if config.is_file() else {}
        s = json.loads(summary.read_text()) if status == "ok" else {}
        runs.append((folder, flat, {k: _get(s, p) for k, p in METRICS.items()}, status, error))
    if not runs:
        raise FileNotFoundError(f"no run (run.json or summary.json) below {root}")
    # NOTE: only keys every run has: a policy's own fields exist only where it was chosen,
    # and its name (always present) already tells the runs apart.
    configs = [flat for _, flat, _, _, _ in runs if flat]
    keys = sorted(set.intersection(*(set(flat) for flat in configs))) if configs else []
    varying = [k for k in keys if len({str(flat[k]) for flat in configs}) > 1]
    # A Hydra sweep's keys label the rows too, group choices that are no config field
    # included (pools=pd_split): the runs differ in them whatever their configs share.
    given = {path: overrides(path) for path, *_ in runs}
    if all(g is not None for g in given.values()):
        for g in given.values():
            for k in g:  # type: ignore[union-attr]
                if k not in varying and len({str(swept_value(flat, given[p], k))
                                             for p, flat, *_ in runs}) > 1:
                    varying.append(k)
    rows = [{**{k: swept_value(flat, given[path], k) for k in varying}, **metrics,
             "status": status, "error": error, "run": str(path.relative_to(root)) or "."}
            for path, flat, metrics, status, error in runs]
    df = pd.DataFrame(rows)
    keep = [c for c in df.columns if c in ("status", "error", "run") or df[c].notna().any()]
    return df[keep]


def plot(df: pd.DataFrame, label_cols: list[str], path: Path) -> None:
    """One bar per run for the headline metrics (and the PDF beside ``path``)."""
    from simkv.metrics import style

    labels = [", ".join(f"{c}={r[c]}" for c in label_cols) or r["run"] for _, r in df.iterrows()]
    # A metric no run has (no sessions: no JCT; nothing cached: hit rate 0) gets no panel.
    cols = [c for c in ("jct_mean_s", "ttft_p99_s", "hit_rate")
            if c in df and (c == "ttft_p99_s" or df[c].fillna(0).abs().sum() > 0)]
    with style.context():
        fig, axes = style.figure(1, len(cols), size=(5 * len(cols), 0.45 * len(df) + 1.5),
                                 squeeze=False)
        for ax, col in zip(axes[0], cols, strict=True):
            ax.barh(range(len(df)), df[col])
            ax.set_yticks(range(len(df)), labels if ax is axes[0][0] else [""] * len(df))
            ax.invert_yaxis()
            ax.set_xlabel(col)
    style.save(fig, path)


def plot_metric(df: pd.DataFrame, x: str, y: str, by: list[str], path: Path) -> list[Path]:
    """``y`` against ``x`` over the completed jobs, one line per value of the ``by`` keys;
    written as PNG and PDF."""
    from simkv.metrics import style

    for col in (x, y, *by):
        if col not in df:
            raise ValueError(f"no column {col!r} in the sweep; swept keys and metrics: "
                             f"{', '.join(c for c in df.columns if not c.startswith('cluster.pools'))}")
    ok = df[df["status"] == "ok"].sort_values([*by, x], kind="stable")
    for col in (x, y):
        # An empty column would draw empty axes and exit 0 (issue 18): say so instead.
        if not ok[col].notna().any():
            raise ValueError(f"--{'x' if col == x else 'y'} {col}: the column is empty in every "
                             f"completed job ({len(ok)}), so there is nothing to plot; choose a "
                             f"key the sweep varied or a metric its summaries have")
    with style.context():
        fig, ax = style.figure(1, 1, size=(6.0, 4.0))
        groups = ok.groupby(by, sort=False, dropna=False) if by else [((), ok)]
        for key, g in groups:
            key = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{k}={v}" for k, v in zip(by, key, strict=True)) or None
            ax.plot(g[x], g[y], marker="o", label=label)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        if by:
            ax.legend()
    return style.save(fig, path)


def main(argv: list[str] | None = None) -> int:
    return guarded("simkv-compare", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(prog="simkv-compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="a sweep folder (or any folder holding runs)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-dataset", action="store_true", help="do not write DIR/dataset")
    ap.add_argument("--x", help="a swept key for the x axis (e.g. cluster.replicas)")
    ap.add_argument("--y", action="append", default=[],
                    help="a summary metric, dotted (e.g. ttft_s.p99, goodput.requests_per_s); "
                         "repeat for several plots")
    ap.add_argument("--by", action="append", default=None,
                    help="a key whose values become separate lines (default: the other swept keys)")
    args = ap.parse_args(argv)
    if bool(args.x) != bool(args.y):
        raise ValueError("--x and --y go together: simkv-compare DIR --x KEY --y METRIC")
    df = collect(args.dir)
    label_cols = [c for c in df.columns if c not in METRICS and c not in ("run", "status", "error")]
    df.to_csv(args.dir / "compare.csv", index=False, float_format="%.6g")
    ok = df[df["status"] == "ok"]
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", "{:.4g}".format):
        if len(ok):
            print(ok.drop(columns=["run", "status", "error"]).to_string(index=False))
    failed = df[df["status"] != "ok"]
    if len(failed):
        print(f"\n{len(failed)} of {len(df)} runs did not complete (no metrics; listed in "
              f"compare.csv with their error):")
        for _, r in failed.iterrows():
            print(f"  {r['run']}: {r['status']}: {r['error']}")
    written = [args.dir / "compare.csv"]
    if not args.no_plot and len(ok):
        plot(ok.reset_index(drop=True), label_cols, args.dir / "compare.png")
        written.append(args.dir / "compare.png")
    if not args.no_dataset:
        dest = gather(args.dir)
        written.append(dest)
    if args.x:
        table, keys = summary_table(args.dir)
        # One line per combination of the other keys that vary (constant ones label nothing).
        by = args.by if args.by is not None else [
            k for k in keys if k != args.x and table[k].astype(str).nunique() > 1]
        for y in args.y:
            stem = f"compare_{y}_vs_{args.x}".replace("/", "_")
            written += plot_metric(table, args.x, y, by, args.dir / f"{stem}.png")
    print("\nwritten: " + ", ".join(str(p) for p in written))
    if not args.no_dataset:
        print(f"read it: pandas.read_parquet('{dest / 'requests'}') (or '{dest / 'summary'}')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
