"""``simkv-calibrate``: measure a GPU, then fit a calibrated hardware profile.

    simkv-calibrate run --out calib/               # on a CUDA machine (torch + triton)
    simkv-calibrate fit --raw calib/ --base h100_sxm_80gb --out my_h100.yaml
    simkv hardware.path=my_h100.yaml               # simulate with it
"""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "fit"):
        print(__doc__)
        raise SystemExit(2)
    cmd = sys.argv.pop(1)
    if cmd == "run":
        from simkv.calibration.run import main as run

        run()
    else:
        from simkv.calibration.fit import main as fit

        fit()


if __name__ == "__main__":
    main()
