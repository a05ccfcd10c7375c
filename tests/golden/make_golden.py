"""Regenerate the golden one-pool runs (tests/test_golden.py): only when a change is *meant*
to alter the engine's results, and say so in the commit.

    python tests/golden/make_golden.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow.parquet as pq

import simkv

HERE = Path(__file__).parent
COMMON = ["output.plot=false", "output.progress=false"]

# name -> overrides: the default job, agents over a DRAM tier, chat with tool-call pins,
# an MoE model, a tensor/pipeline-parallel 70B with the least-outstanding router.
CASES: dict[str, list[str]] = {
    "default": ["workload.num_requests=800"],
    "preempting": ["workload.num_requests=600", "kv.num_gpu_blocks_override=400",
                   "cluster.replicas=1"],
    "agents_dram": ["workload=swebench", "workload.num_programs=12", "workload.program_rate=0.5",
                    "cluster.replicas=2", "router=session_affinity", "offload=dram",
                    "memory.dram_gib=8", "kv.num_gpu_blocks_override=6000"],
    "chat_ttl": ["workload=sharegpt", "workload.num_conversations=60", "workload.conversation_rate=2",
                 "tool_kv=ttl_pin", "router=session_affinity"],
    "mixtral": ["model=mixtral_8x7b", "cluster.tensor_parallel=2", "workload.num_requests=500",
                "workload.mean_rate=20"],
    "llama70b_tp_pp": ["model=llama3_70b", "cluster.tensor_parallel=4", "cluster.pipeline_parallel=2",
                       "cluster.replicas=1", "router=least_outstanding", "workload.num_requests=400",
                       "workload.mean_rate=8"],
}


def run(name: str, out: Path) -> Path:
    simkv.simulate(simkv.compose([*CASES[name], *COMMON]), out)
    return out / "requests.parquet"


def main() -> None:
    for name in CASES:
        with tempfile.TemporaryDirectory() as d:
            table = pq.read_table(run(name, Path(d)))
        pq.write_table(table.replace_schema_metadata(None), HERE / f"{name}.parquet",
                       compression="zstd")
        print(f"{name}: {table.num_rows} rows")


if __name__ == "__main__":
    main()
