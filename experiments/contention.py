"""KV hand-offs and the expert all-to-all on the same RDMA links: the cost in TPOT.

    python experiments/contention.py [--quick]

Disaggregated prefill and decode of Qwen3-30B-A3B on H100 nodes: four TP2 prefill instances on
one node, one decode instance with data-parallel attention and expert parallelism over 16 GPUs
(two nodes, so its all-to-all crosses the nodes' RDMA NICs), Poisson arrivals of long prompts
(median 2,000 tokens, outputs median 100). Each prefilled request's KV reaches the decode
instance over the same RDMA links (docs/CLUSTER.md). With ``collectives.on_fabric=false``
simkv prices the all-to-all from the link bandwidth alone and never lets it meet the KV
traffic; with ``true`` (docs/PARALLELISM.md) the all-to-all holds its rate on the links and
slows down by its fair share while KV transfers run there. The GPUs' RDMA bandwidth is an
assumption swept: 50 GB/s (a DGX H100's 400 Gb/s per GPU), 12.5 GB/s (100 Gb/s) and
6.25 GB/s (50 Gb/s).

No paper measures this for simkv to match: the headline compares simkv's TPOT increase with a
first-order estimate computed from the run *without* contention, fixed before the run: the
decode steps' RDMA all-to-all seconds times the mean number of KV transfers on the decode
node's RDMA link (each takes an equal share of it: the all-to-all's bandwidth term grows by
that number). Agreement: within a factor of 2 either way (the rule could fail: the transfers
slow down under the collectives' reservation, which feeds back into their number).
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from suite import Headline, Lever, Rule, cli

import simkv
from simkv.metrics import style
from simkv.perf.collectives import iteration_load
from simkv.perf.roofline import CostModel

# Declared before the run: simkv's TPOT increase / the first-order estimate, within 2x.
RULE = Rule(paper=1.0, tol=0.5, paper_hi=4.0 / 3.0, null=0.0)  # the band [0.5, 2]
BANDWIDTHS = (50.0, 12.5, 6.25)
BASE = ["model=qwen3_30b_a3b", "pools=pd_split", "pools.prefill.instances=4",
        "pools.prefill.tensor_parallel=2", "pools.decode.instances=1",
        "pools.decode.data_parallel_attention=16", "pools.decode.expert_parallel=16",
        "workload=poisson", "workload.prompt_median=8000", "workload.prompt_max=32000",
        "workload.prompt_sigma=0.5", "workload.output_median=100",
        "output.transfers=true", "output.plot=false", "output.progress=false"]


def _node(bw: float, folder: Path) -> Path:
    node = yaml.safe_load(resources.files("simkv.hardware_profiles").joinpath(
        "nodes", "dgx_h100.yaml").read_text())
    node["gpu_network"]["bandwidth"] = {"value": bw, "unit": "GB/s",
                                        "source": "assumed, swept (experiments/contention.py)"}
    path = folder / f"node_{bw:g}.yaml"
    path.write_text(yaml.safe_dump(node))
    return path


def _run(over: list[str]) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    with tempfile.TemporaryDirectory() as d:
        res = simkv.simulate(simkv.compose(over), d)
        return res.summary, res.requests, pd.read_parquet(Path(d) / "transfers.parquet")


def _estimate(summary: dict, requests: pd.DataFrame, transfers: pd.DataFrame, bw: float) -> float:
    """First-order TPOT increase from the run without contention (see the module docstring)."""
    kv = transfers[transfers["what"] == "kv handoff"]
    # The decode instance's first GPUs are on node 1 (pools have their own nodes): the KV
    # lands on rdma1; the mean number of transfers on it = their total time / the makespan.
    on_link = kv[kv["links"].str.contains("rdma1")]
    mean_n = float((on_link["end_s"] - on_link["start_s"]).sum()) / summary["makespan_s"]
    from simkv.engine.pool import load_model
    from simkv.entities.hardware import load_profile
    from simkv.perf.expert_parallel import AllToAllLinks

    hw = load_profile("h100_sxm_80gb")
    links = AllToAllLinks(hw.nvlink_bandwidth * hw.eff("nvlink").values[-1], hw.nvlink_latency_s,
                          bw * 1e9, 5e-6, 8)
    cost = CostModel(load_model("qwen3_30b_a3b"), hw, 1, 1, data_parallel=16,
                     expert_parallel=16, links=links)
    # The mean decode batch (Little's law): the requests' decode time over the makespan.
    done = requests[requests["status"] == "finished"]
    decoding = float((done["completion_s"] - done["first_token_s"]).sum())
    batch = max(1, round(decoding / summary["makespan_s"]))
    load = iteration_load(cost, batch, spans_nodes=True)
    n_layers, _, remote = load.a2a
    return n_layers * remote * mean_n


def run(quick: bool) -> pd.DataFrame:
    n, rate = (300, 15.0) if quick else (3000, 15.0)
    bws = BANDWIDTHS[-1:] if quick else BANDWIDTHS
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for bw in bws:
            node = _node(bw, Path(d))
            common = [*BASE, f"memory.node_path={node}", f"workload.num_requests={n}",
                      f"workload.rate={rate}"]
            off_s, off_r, off_t = _run(common)
            on_s, on_r, _ = _run([*common, "collectives.on_fabric=true"])
            est = _estimate(off_s, off_r, off_t, bw)
            for mode, s, r in (("priced apart", off_s, off_r), ("on the fabric", on_s, on_r)):
                coll = s["cluster"].get("collectives", {})
                rows.append({"gpu_network_gb_s": bw, "collectives": mode,
                             "tpot_mean_s": s["tpot_s"]["mean"], "tpot_p90_s": s["tpot_s"]["p90"],
                             "ttft_p50_s": s["ttft_s"]["p50"],
                             "kv_transfer_mean_s": float(np.nanmean(r["kv_transfer_s"])),
                             "finished": s["requests"]["finished"],
                             "runs_slowed": coll.get("runs_slowed", 0),
                             "rdma_collective_bytes": coll.get("bytes", {}).get("rdma", 0.0),
                             "estimate_tpot_increase_s": est})
    return pd.DataFrame(rows)


def headline(df: pd.DataFrame) -> list[Headline]:
    slow = df[df["gpu_network_gb_s"] == df["gpu_network_gb_s"].min()].set_index("collectives")
    off, on = slow.loc["priced apart"], slow.loc["on the fabric"]
    inc = on.tpot_mean_s - off.tpot_mean_s
    est = off.estimate_tpot_increase_s
    ratio = inc / est if est else float("nan")
    return [Headline(
        "(no paper: simkv against its first-order estimate)",
        f"TPOT cost of KV hand-offs sharing the RDMA links with the EP16 all-to-all, at "
        f"{off.gpu_network_gb_s:g} GB/s per GPU [{RULE.text()}]",
        f"estimate +{est * 1e3:.2f} ms",
        f"+{inc * 1e3:.2f} ms ({inc / off.tpot_mean_s:.1%} of TPOT; ratio {ratio:.2f}); KV "
        f"transfer {off.kv_transfer_mean_s * 1e3:.0f} -> {on.kv_transfer_mean_s * 1e3:.0f} ms",
        RULE, float(ratio),
        lever=Lever("estimate_tpot_increase_s", f"gpu_network_gb_s == {float(off.gpu_network_gb_s)!r} "
                    "and collectives == 'priced apart'", -1.0),
        why="the estimate: RDMA all-to-all seconds of a decode step x the mean number of KV "
        "transfers on the decode node's link, from the run without contention")]


def figure(df: pd.DataFrame) -> Figure:
    fig, (a, b) = style.figure(1, 2, size=(10, 3.6))
    for mode, g in df.groupby("collectives"):
        a.plot(g["gpu_network_gb_s"], g["tpot_mean_s"] * 1e3, marker="o", label=str(mode))
        b.plot(g["gpu_network_gb_s"], g["kv_transfer_mean_s"] * 1e3, marker="o", label=str(mode))
    for ax, label in ((a, "TPOT mean (ms)"), (b, "KV hand-off mean (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("RDMA per GPU (GB/s)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    a.set_title("decode: EP16 over 2 nodes")
    b.set_title("prefill -> decode KV")
    return fig


if __name__ == "__main__":
    cli("contention")
