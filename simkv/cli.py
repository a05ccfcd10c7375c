"""The ``simkv`` command: Hydra composes the config, ``simulate`` runs it.

    simkv                                      # the packaged default run
    simkv model=llama3_70b hardware=a100_80gb cluster.replicas=4 cluster.tensor_parallel=4
    simkv -m cluster.replicas=1,2,4 router=round_robin,least_outstanding
    simkv --help                               # every group and its choices
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from simkv.config.store import register_configs
from simkv.metrics.summary import format_table
from simkv.runner import simulate

log = logging.getLogger("simkv")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def _run(dc: DictConfig) -> float | None:
    hc = HydraConfig.get()
    out = hc.runtime.output_dir
    multirun = OmegaConf.select(hc, "job.num", default=None) is not None and \
        str(hc.mode) == "RunMode.MULTIRUN"
    try:
        cfg = OmegaConf.to_object(dc)
        result = simulate(cfg, out)
    except ValueError as exc:
        # User errors (bad config, model does not fit, malformed trace): a message, not a
        # traceback. In a sweep the other jobs go on.
        log.error("%s", exc)
        print(f"simkv: error: {exc}", file=sys.stderr)
        if multirun:
            return None
        raise SystemExit(2) from None
    overrides = " ".join(hc.overrides.task) or "(defaults)"
    print(f"\nsimkv {overrides}")
    print(format_table(result.summary))
    print(f"results: {out}  (requests.parquet, summary.json, latency.png)")
    if multirun:
        print(f"compare the sweep: simkv-compare {hc.sweep.dir}")
    # The return value is what a Hydra optimising sweeper (Optuna) maximises.
    return float(result.summary["goodput"]["requests_per_s"])


def main() -> None:
    register_configs()
    _run()


if __name__ == "__main__":
    main()
