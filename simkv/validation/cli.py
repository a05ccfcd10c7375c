"""``simkv-validate``: simkv's predictions against measurements of a real serving engine.

    simkv-validate protocol validation/hf_h200_2026-11-30 --exclude qwen2_5_14b_call1
    simkv-validate predict FOLDER... --fit validation/hf_h200_2026-11-30/llama3_8b [--fit DIR]
    simkv-validate predict FOLDER... --engine transformers_cudagraph_h200
    simkv-validate schedule FOLDER...
    simkv-validate pairs BASE VARIANT... --fit DIR [--fit DIR]
    simkv-validate steps validation/hf_h100_2026-11-25_cudagraph_warm3

The folders are the layouts docs/VALIDATION.md documents ("Bring your own measurements");
anything else is refused with one line naming the file and the field. The forms of earlier
releases still work: ``--protocol ROOT``, ``--fit DIR... --predict DIR...`` and ``FOLDER``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

COMMANDS = ("protocol", "predict", "schedule", "pairs", "steps")
SPLITS = ("in-sample", "leave-one-run-out", "leave-one-load-out", "leave-one-shape-out")


def legacy(argv: list[str]) -> list[str]:
    """Earlier releases' argument forms, as subcommands."""
    if not argv or argv[0] in COMMANDS or argv[0] in ("-h", "--help"):
        return argv
    if "--protocol" in argv:
        i = argv.index("--protocol")
        rest = argv[:i] + argv[i + 2:]
        return ["protocol", *argv[i + 1:i + 2], *rest]
    if "--predict" in argv or "--fit" in argv:
        fit, folders, rest = [], [], []
        it = iter(argv)
        target: list[str] | None = None
        for a in it:
            if a in ("--fit", "--predict"):
                target = fit if a == "--fit" else folders
            elif a.startswith("-"):
                target = None
                rest.append(a)
                if a in ("--profile", "--model", "--csv"):
                    rest.append(next(it, ""))
            elif target is not None:
                target.append(a)
            else:
                rest.append(a)
        return ["predict", *folders, *[x for d in fit for x in ("--fit", d)], *rest]
    return ["steps", *argv]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="simkv-validate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--profile", default=None,
                       help="simkv hardware profile (default: from engine.json's device, "
                            "H200 -> h200_calibrated, H100 -> h100_sxm_80gb_calibrated)")
        p.add_argument("--model", default=None,
                       help="simkv model config for folders whose engine.json has no model_spec")
        p.add_argument("--csv", default=None, help="write the per-stream results here")
        p.add_argument("--moe-kernels", default=None, metavar="CSV",
                       help="moe_block.csv of simkv.calibration.moe_bench: MoE terms for fits "
                            "that have no MoE step of their own")

    p = sub.add_parser("protocol", help="every held-out split over the folders under ROOT (one or more)",
                       description="Fit the engine's costs on some streams' profiled steps, "
                       "predict the others' requests: leave one run (replay) out, one load "
                       "out, one model shape out; beside the engine's own spread.")
    p.add_argument("root", nargs="+", help="campaign folders (several: one protocol over all "
                   "their runs, each named <campaign>/<folder>)")
    p.add_argument("--splits", nargs="+", default=None, choices=SPLITS)
    p.add_argument("--exclude", nargs="*", default=[],
                   help="runs left out: a folder's name (in every campaign) or <campaign>/<folder>")
    common(p)

    p = sub.add_parser("predict", help="predict the streams of FOLDERs",
                       description="One fit on the --fit folders' profiled steps (or an engine "
                       "preset, --engine, for request-level folders), every stream of the "
                       "FOLDERs predicted request by request.")
    p.add_argument("folders", nargs="+", metavar="FOLDER")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--fit", action="append", default=[], metavar="DIR",
                   help="a folder with step profiles to fit the engine's costs on (repeat it)")
    g.add_argument("--engine", default=None, metavar="PRESET",
                   help="an engine preset of simkv/conf/engine/ instead of a fit")
    common(p)

    p = sub.add_parser("schedule", help="per-step schedule agreement with the engine",
                       description="Feed simkv's transformers scheduler the engine's arrivals "
                       "at the engine's own step times and compare each step's sequences, query "
                       "tokens and KV read with the engine's (iterations_<stream>.csv).")
    p.add_argument("folders", nargs="+", metavar="FOLDER")
    common(p)

    p = sub.add_parser("pairs", help="predicted vs measured change between configurations",
                       description="For each VARIANT folder, the streams it shares (same name) "
                       "with BASE: the engine's measured change in TTFT p50/p99, TPOT p50, E2E "
                       "p50 and throughput, and simkv's predicted change, from one fit.")
    p.add_argument("base")
    p.add_argument("variants", nargs="+", metavar="VARIANT")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--fit", action="append", default=[], metavar="DIR",
                   help="a folder with step profiles to fit on (repeat it)")
    g.add_argument("--engine", default=None, metavar="PRESET")
    common(p)

    p = sub.add_parser("steps", help="an hf_replay folder (the H100 runs of 2026-11-25)",
                       description="Fit on the folder's steps (or its light load's requests) and "
                       "predict every load, with the datasheet and calibrated H100 profiles.")
    p.add_argument("folder")
    p.add_argument("--plot")
    p.add_argument("--fit", choices=("auto", "light", "steps"), default="auto")
    return ap


def main(argv: Sequence[str] | None = None) -> None:
    import sys

    args = parser().parse_args(legacy(list(sys.argv[1:] if argv is None else argv)))
    if args.command == "steps":
        from simkv.validation.compare import steps_main

        steps_main(args.folder, args.fit, args.plot)
        return
    from simkv.validation import holdout as H  # noqa: N812
    from simkv.validation.campaign import find_runs_in, load_run

    prior = None
    if getattr(args, "moe_kernels", None):
        from simkv.validation.stepfit import moe_kernel_terms

        prior = moe_kernel_terms(args.moe_kernels)
    if args.command == "protocol":
        runs = [r for r in find_runs_in(args.root, args.model)
                if r.name not in args.exclude and r.folder.name not in args.exclude]
        df, fits = H.evaluate(runs, args.profile, tuple(args.splits) if args.splits else None,
                              progress=lambda s: print(f"  fitted {s}", flush=True),
                              moe_prior=prior)
        if "in-sample: all" in fits:
            print(f"in-sample fit: {H.describe(fits['in-sample: all'])}")
        H.report(df, runs, args.csv)
    elif args.command == "predict":
        runs = [load_run(f, args.model) for f in args.folders]
        if args.engine:
            df, engine = H.preset_predict(args.engine, runs, args.profile)
        else:
            df, engine = H.fit_predict([load_run(f, args.model) for f in args.fit], runs,
                                       args.profile, prior)
        print(f"engine: {H.describe(engine)}")
        H.report(df, runs, args.csv)
    elif args.command == "schedule":
        from simkv.validation.schedule import schedule_report

        schedule_report([load_run(f, args.model) for f in args.folders], args.csv)
    elif args.command == "pairs":
        from simkv.validation.pairs import pairs_main

        pairs_main(args.base, args.variants, args.fit, args.engine, args.profile, args.model,
                   args.csv)


if __name__ == "__main__":
    main()
