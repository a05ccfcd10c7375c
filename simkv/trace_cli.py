"""``simkv-trace``: inspect, generate and convert traces.

    simkv-trace stats FILE [--format burstgpt] [--plot arrivals.png]
    simkv-trace generate burstgpt num_requests=100000 --out x.parquet [--seed 1]
    simkv-trace generate swebench num_programs=50 --out agents.parquet
    simkv-trace convert FILE --format azure --out azure.parquet [--models GPT-4 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from simkv.entry import guarded
from simkv.workload.base import ArrivalBatch
from simkv.workload.native import write_trace
from simkv.workload.readers import FORMATS, Columns, read
from simkv.workload.stats import TraceSummary, format_stats, plot_trace


def _stats(args: argparse.Namespace) -> int:
    summary = TraceSummary(read(args.file, args.format, skip_bad=args.skip_bad))
    d = summary.to_dict()
    print(json.dumps(d, indent=2) if args.json else format_stats(d))
    if args.plot:
        plot_trace(summary, Path(args.plot), f"{args.file} ({args.format})")
        print(f"plot: {args.plot}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    import simkv
    from simkv.registry import build
    from simkv.workload.sessions import SessionWorkload

    overrides = [f"workload={args.name}", f"seed={args.seed}",
                  f"kv.prefix_block_tokens={args.prefix_block_tokens}"]
    overrides += [f"workload.{kv}" for kv in args.params]
    cfg = simkv.compose(overrides)
    workload = build(cfg.workload)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(2)[0])
    granule = cfg.kv.prefix_block_tokens
    if isinstance(workload, SessionWorkload):
        # Every call carries the prefix hashes of the context it shares with the previous
        # call of its session: a closed-loop replay shares what the live run shares.
        c = workload.materialise(rng, granule)
        batch = ArrivalBatch(c["arrival_s"], c["prompt_tokens"].astype(np.int64),
                             c["output_tokens"].astype(np.int64), c["session"].astype(np.int64),
                             c["turn"].astype(np.int64), prefix=c["prefix"])
        rows = write_trace(args.out, [(batch, c["think_s"])], granule)
    else:
        # Generators with prefix ids (shared_prefix) say which block size they stand for.
        rows = write_trace(args.out, ((b, None) for b in workload.arrivals(rng)),
                           getattr(cfg.workload, "block_tokens", None))
    print(f"wrote {rows:,} requests to {args.out}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from simkv.workload.trace_file import TraceWorkload, TraceWorkloadConfig

    cfg = TraceWorkloadConfig(path=args.file, format=args.format, models=args.models or [],
                              log_types=args.log_types or [], failed=args.failed,
                              on_bad_row="skip" if args.skip_bad else "error", rebase=False)
    wl = TraceWorkload(cfg)
    think: dict[int, np.ndarray] = {}

    def pairs():  # type: ignore[no-untyped-def]
        for c in wl._filtered(np.random.default_rng(0)):
            yield _columns_batch(c), c.think_s

    rows = write_trace(args.out, pairs())
    del think
    print(f"wrote {rows:,} requests to {args.out}" + (f" ({wl.skipped_rows} bad rows skipped)"
                                                       if wl.skipped_rows else ""))
    return 0


def _columns_batch(c: Columns) -> ArrivalBatch:
    return ArrivalBatch(c.arrival_s, c.prompt_tokens.astype(np.int64),
                        np.maximum(c.output_tokens, 1).astype(np.int64),
                        c.session.astype(np.int64) if c.session is not None else None,
                        c.turn.astype(np.int64) if c.turn is not None else None,
                        c.model, c.log_type, c.failed, c.prefix)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="simkv-trace", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("stats", help="print a trace's statistics (and plot them)")
    st.add_argument("file")
    st.add_argument("--format", default="native", choices=FORMATS)
    st.add_argument("--plot", help="write arrival-rate and length plots to this PNG")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.add_argument("--skip-bad", action="store_true", help="skip bad rows instead of stopping")
    st.set_defaults(fn=_stats)
    gen = sub.add_parser("generate", help="write a generated workload as a native trace")
    gen.add_argument("name", help="a workload: burstgpt, poisson, agent, conversation, "
                                  "shared_prefix or a preset (swebench, bfcl, sharegpt, ...)")
    gen.add_argument("params", nargs="*", help="generator fields, key=value")
    gen.add_argument("--out", required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--prefix-block-tokens", type=int, default=512,
                     help="tokens per prefix hash (the replay's kv.prefix_block_tokens)")
    gen.set_defaults(fn=_generate)
    cv = sub.add_parser("convert", help="convert a trace to simkv's native Parquet")
    cv.add_argument("file")
    cv.add_argument("--format", default="native", choices=FORMATS)
    cv.add_argument("--out", required=True)
    cv.add_argument("--models", nargs="*")
    cv.add_argument("--log-types", nargs="*")
    cv.add_argument("--failed", choices=("keep", "drop"), default="keep")
    cv.add_argument("--skip-bad", action="store_true")
    cv.set_defaults(fn=_convert)
    args = ap.parse_args(argv)
    return guarded("simkv-trace", lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
