"""``simkv-calibrate``: measure a GPU, then fit a calibrated hardware profile.

    simkv-calibrate run --out calib/               # on a CUDA machine (torch + triton)
    simkv-calibrate fit --raw calib/ --base h100_sxm_80gb --out my_h100.yaml
    simkv-calibrate power-fit --campaign validation/hf_h100_... --out my_power.yaml  # docs/ENERGY.md
    simkv hardware.path=my_h100.yaml               # simulate with it

argparse with one subcommand per step, so ``--help`` works anywhere (no torch needed to read
it) and a machine without torch, triton or a GPU is told in one line what ``run`` needs. Each
step keeps its own module (calibration/run.py, calibration/fit.py); the options declared
here are the ones they read, and anything else given is handed on to them unchanged.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

RUN_NEEDS = ("simkv-calibrate run needs torch and triton on a CUDA GPU: pip install "
             "'simkv[kernels]' (or install the torch build for your CUDA first); "
             "docs/CALIBRATION.md")


class MissingKernelsError(ValueError):
    """torch, triton or a CUDA GPU is missing: a user's setup, not a bug (exit status 2)."""


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="simkv-calibrate", description="Measure a GPU, then fit a calibrated hardware profile "
        "(docs/CALIBRATION.md).", epilog="then: simkv hardware.path=my_gpu.yaml")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{run,fit,power-fit}")
    run = sub.add_parser("run", help="microbenchmark this machine's GPU (torch + triton, CUDA)",
                         description="Time GEMMs, attention, norms and copies with Triton kernels "
                         "on this machine's GPU; writes CSVs and environment.json to --out.")
    run.add_argument("--out", required=True, help="folder for the measurements")
    run.add_argument("--quick", action="store_true", help="fewer shapes (a smoke run)")
    run.add_argument("--only", nargs="*", metavar="STEP",
                     help="steps to run (gemm, gemm_shapes, ops, prefill, decode, norm, copies)")
    fit = sub.add_parser("fit", help="fit a hardware profile (YAML) from run's measurements",
                         description="Fit efficiency curves to the CSVs of `run` and write a "
                         "hardware profile that `simkv hardware.path=...` reads.")
    fit.add_argument("--raw", required=True, help="folder with the CSVs of `run`")
    fit.add_argument("--base", default="h100_sxm_80gb", help="shipped profile to start from")
    fit.add_argument("--out", required=True, help="the profile to write (YAML)")
    pf = sub.add_parser("power-fit", help="fit a GPU power model (YAML) from a campaign's NVML samples",
                        description="Fit idle, active, compute and memory power to the power "
                        "loops and engine replays of a device campaign; held-out errors per "
                        "window (docs/ENERGY.md).")
    pf.add_argument("--campaign", required=True, help="campaign folder with power/ and engine folders")
    pf.add_argument("--out", help="the power model to write (YAML; required unless --check)")
    pf.add_argument("--check", metavar="POWER_MODEL",
                    help="fit nothing: predict every engine stream with a shipped power model")
    return ap


def check_kernels() -> None:
    """Refuse ``run`` in one line on a machine that cannot run it."""
    missing = [m for m in ("torch", "triton") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingKernelsError(f"{' and '.join(missing)} not installed; {RUN_NEEDS}")
    import torch

    if not torch.cuda.is_available():
        raise MissingKernelsError(f"no CUDA GPU visible to torch {torch.__version__}; {RUN_NEEDS}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, _ = parser().parse_known_args(argv)
    # The step's own parser reads the same arguments (and any it added since).
    rest = argv[argv.index(args.command) + 1:]
    if args.command == "run":
        check_kernels()
        from simkv.calibration.run import main as step
    elif args.command == "power-fit":
        from simkv.calibration.power_fit import main as power_fit

        power_fit(rest)
        return 0
    else:
        from simkv.calibration.fit import main as step
    sys.argv = [f"simkv-calibrate {args.command}", *rest]
    step()
    return 0


if __name__ == "__main__":
    main()
