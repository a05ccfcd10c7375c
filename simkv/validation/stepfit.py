"""The engine as a simkv configuration, and its costs fitted on its own profiled steps.

Every profiled step is first replayed through simkv's transformers scheduler on the engine's
own clock (``schedule.teacher_forced``): that gives its exact composition (prefill chunks,
decodes, KV each reads, the CUDA-graph key) where the step file only has totals, and checks
the schedule on the way. Each step is then priced by simkv's GPU model (GEMMs by shape, small
operators and the LM head from the hardware profile) and what is left is regressed, by
bounded least squares, on columns in the model's own dimensions so one fit serves every
shape (``step_columns``): host time per step, per sampled sequence and per KV token read; GPU
time per dense GEMM FLOP of each prefill token (its GEMMs run slower in the engine's long
prefill steps than alone); a fixed GPU time per layer; the padded masked attention of
transformers' paged SDPA per padded KV token and layer, per KV element and per query-head
element x (tiled, padded) query token; and for MoE layers a fixed time and one per routed
expert FLOP.

Steps that recorded a CUDA graph are fitted apart, after the rest: what they took beyond
their own price, regressed on (1, layers, that price): ``engine.graph_capture_s``,
``graph_capture_layer_s`` and ``graph_capture_factor`` (transformers' ``_capture_graph`` runs
the step eagerly once, launch by launch, then records it after a synchronise and a garbage
collection).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simkv.config.schema import EngineConfig, SimConfig
from simkv.policies.scheduler.interface import SchedulerOutput
from simkv.validation.campaign import Run, graph_keys_before, profile_for
from simkv.validation.compare import TRANSFORMERS_KV_PADDING

# Query tiles the padded attention's products may count in; the fit keeps the best.
QUERY_TILES = (1, 64, 128, 256, 512, 1024)
# Fitted columns of a step and the engine parameter each coefficient sets.
COLUMNS = {"one": "iteration_overhead_s", "sequences": "per_sequence_overhead_s",
           "prefill": "per_prefill_token_overhead_s", "prefill_flops": "prefill_flop_s",
           "kv": "per_context_token_overhead_s",
           "layers": "per_layer_overhead_s", "kv_layer": "padded_kv_layer_s",
           "kv_elem": "padded_kv_element_s", "query_elem": "padded_query_element_s",
           "moe_layers": "moe_layer_overhead_s", "moe_flops": "moe_expert_flop_s",
           "moe_read": "moe_weight_read_factor"}
CAPTURE = ("graph_capture_s", "graph_capture_layer_s", "graph_capture_moe_layer_s",
           "graph_capture_factor")


def engine_base(run: Run) -> EngineConfig:
    """The engine's padding as transformers resolved it (engine.json), no fitted cost yet."""
    cb, res = run.engine.get("cb_config") or {}, run.engine.get("cb_resolved") or {}
    graphs = bool(cb.get("use_cuda_graph"))
    return EngineConfig(
        iteration_overhead_s=0.0, per_sequence_overhead_s=0.0,
        kv_padding_tokens=int(res.get("kv_padding_interval_size") or TRANSFORMERS_KV_PADDING)
        if graphs else 0,
        query_padding_tokens=int(res.get("q_padding_interval_size") or 64) if graphs else 0,
        padded_logits_rows=int(res.get("max_requests_per_batch") or 1024) if graphs else 0)


def profile_of(run: Run, profile: str | None) -> str:
    """The hardware profile to price a run with: the one given, else its GPU's."""
    return profile or profile_for(run.engine, run.folder)


def uses_graphs(run: Run) -> bool:
    return bool((run.engine.get("cb_config") or {}).get("use_cuda_graph"))


def sim_config(run: Run, profile: str | None, engine: EngineConfig, tag: str | None = None,
               captures: bool = True) -> SimConfig:
    """One instance of the engine: its blocks, budget, scheduler rules and costs. With
    ``tag`` and CUDA graphs, the graphs it held when that stream started are pre-captured and
    every other key is recorded (and paid) on first use (``captures=False``: all held)."""
    from simkv.config.schema import ClusterConfig, HardwareConfig, KVConfig, OutputConfig
    from simkv.policies.router import RoundRobinConfig
    from simkv.validation.campaign import engine_limit
    from simkv.validation.schedule import limits
    from simkv.workload import TraceWorkloadConfig

    e = run.engine
    sched: Any = limits(e).config()
    if e.get("scheduler") == "vllm":  # another engine's request log, scheduled as vLLM does
        from simkv.policies.scheduler import VLLMSchedulerConfig

        budget = engine_limit(e, "max_batch_tokens", run.folder)
        sched = VLLMSchedulerConfig(max_num_seqs=int(e.get("max_num_seqs") or min(256, budget)),
                                    max_num_batched_tokens=budget, chunked_prefill=True)
    elif not uses_graphs(run):
        sched = dataclasses.replace(sched, cuda_graphs="off")
    elif tag is not None and captures:
        base = engine_base(run)
        sched = dataclasses.replace(sched, cuda_graphs="on_first_use",
                                    query_padding=base.query_padding_tokens,
                                    kv_padding=base.kv_padding_tokens,
                                    precaptured=graph_keys_before(run, tag))
    return SimConfig(
        model=run.spec,
        hardware=HardwareConfig(profile=profile_of(run, profile)),
        cluster=ClusterConfig(replicas=1, tensor_parallel=run.tp),
        kv=KVConfig(block_size=engine_limit(e, "block_size", run.folder),
                    num_gpu_blocks_override=engine_limit(e, "num_blocks", run.folder),
                    prefix_caching=False),
        scheduler=sched,
        router=RoundRobinConfig(),
        workload=TraceWorkloadConfig(path="", rebase=False),
        engine=engine,
        output=OutputConfig(plot=False, progress=False),
    )


def cost_model(run: Run, profile: str | None, engine: EngineConfig) -> Any:
    from simkv.entities.hardware import load_profile
    from simkv.perf.roofline import CostModel

    return CostModel(run.spec, load_profile(profile_of(run, profile)), tensor_parallel=run.tp,
                     engine=engine)


def plans(run: Run, tag: str) -> list[SchedulerOutput | None]:
    """Each profiled step of a stream as simkv's scheduler plans it on the engine's clock;
    the step file gains ``prefill`` (exact prefill tokens), ``decodes``, ``sampled`` and
    ``agree`` (sequences and tokens equal the engine's)."""
    from simkv.validation.schedule import limits, teacher_forced

    steps = run.steps[tag]
    d = teacher_forced(run.requests[tag], steps, limits(run.engine))
    out: list[SchedulerOutput | None] = d.attrs["plans"]
    steps["prefill"] = [p.prefill_tokens if p is not None else 0 for p in out]
    steps["decodes"] = [p.num_decodes if p is not None else 0 for p in out]
    steps["sampled"] = [p.num_sampled if p is not None else 0 for p in out]
    steps["agree"] = d["agree"].to_numpy()
    return out


def price(plan_list: list[SchedulerOutput | None], cost: Any) -> np.ndarray:
    """simkv's time for each planned step under ``cost`` (a CostModel); NaN where simkv
    planned nothing."""
    return np.array([cost.iteration_time(p) if p is not None else np.nan for p in plan_list])


def step_columns(steps: pd.DataFrame, run: Run, engine: EngineConfig, tile: int,
                 profile: str | None = None) -> pd.DataFrame:
    """The fitted columns of each step, in the model's dimensions (``COLUMNS``)."""
    from simkv.entities.hardware import load_profile
    from simkv.perf.gemm import dense_flops_per_token
    from simkv.perf.roofline import experts_hit

    m, tp = run.spec, run.tp
    heads, kv_heads = m.num_heads / tp, max(1.0, m.num_kv_heads / tp)
    layers, d = float(m.num_layers), float(m.head_dim)
    tokens = steps["tokens"].to_numpy(float)
    kv_read = steps["kv_read"].to_numpy(float)
    pad, qpad = engine.kv_padding_tokens, engine.query_padding_tokens
    padded = np.maximum(1.0, np.ceil(kv_read / pad)) * pad if pad else kv_read + tokens
    q = np.ceil(tokens / qpad) * qpad if qpad else tokens
    q_tiled = np.ceil(q / tile) * tile
    moe = float(m.moe_layers) if m.is_moe else 0.0
    sampled = steps["sampled"] if "sampled" in steps else steps["sequences"]
    if m.is_moe:  # the routed experts' weights read, at HBM peak (padding rows routed alike)
        bw = load_profile(profile_of(run, profile)).hbm_bandwidth
        pad = q - tokens
        hit = np.array([experts_hit(m.num_experts, m.experts_per_token, t, p)
                        for t, p in zip(tokens, pad, strict=True)])
        read = moe * hit * 3.0 * m.hidden_size * m.ffn_size / tp * m.weight_bytes_per_param / bw
    else:
        read = np.zeros(len(steps))
    return pd.DataFrame({
        "one": np.ones(len(steps)), "sequences": sampled.to_numpy(float),
        "prefill": steps["prefill"].to_numpy(float),
        # ... and their dense GEMM FLOPs, for GEMMs slower in the engine's prefill steps.
        "prefill_flops": steps["prefill"].to_numpy(float) * dense_flops_per_token(m, tp),
        "kv": kv_read + tokens,
        "layers": np.full(len(steps), layers),
        "kv_layer": layers * padded, "kv_elem": layers * padded * kv_heads * d,
        "query_elem": layers * padded * q_tiled * heads * d,
        # MoE layers: routing and its kernels, and the routed experts' FLOPs on this GPU.
        "moe_layers": np.full(len(steps), moe),
        "moe_flops": moe * q * 6.0 * m.experts_per_token * m.hidden_size * m.ffn_size / tp,
        "moe_read": read},
        index=steps.index)


@dataclass
class StepData:
    """A run's profiled steps: measured times, simkv's unfitted GPU price of each (its exact
    composition), the fitted columns, and which steps recorded a CUDA graph."""

    run: Run
    tags: np.ndarray
    measured: np.ndarray
    base: np.ndarray
    columns: dict[int, np.ndarray]  # by query tile
    captured: np.ndarray
    plans: list[SchedulerOutput | None]
    agree: np.ndarray


def step_data(run: Run, profile: str | None) -> StepData:
    """Every profiled step of a run, planned and priced once."""
    frames, all_plans = [], []
    for t, d in run.steps.items():
        all_plans += plans(run, t)
        frames.append(d.assign(tag=t))
    d = pd.concat(frames, ignore_index=True)
    engine = engine_base(run)
    base = price(all_plans, cost_model(run, profile, engine))
    cols = {tile: step_columns(d, run, engine, tile, profile).to_numpy() for tile in QUERY_TILES}
    ok = np.isfinite(base)
    return StepData(run, d["tag"].to_numpy(), d["step_s"].to_numpy(), np.where(ok, base, 0.0),
                    cols, (d["captured"].to_numpy() == 1) | ~ok, all_plans,
                    d["agree"].to_numpy(bool))


MOE_TERMS = ("moe_layer_overhead_s", "moe_expert_flop_s", "moe_weight_read_factor")


def moe_kernel_terms(path: str | Path) -> dict[str, float]:
    """The MoE engine terms from timings of MoE layers alone (``moe_block.csv`` of
    ``simkv.calibration.moe_bench``: transformers' whole sparse MoE block, router and experts,
    replayed from a CUDA graph at T tokens, every MoE shape of simkv's specs in it): what each
    took beyond simkv's price of its router and grouped GEMMs (the GPU's profile, from
    environment.json beside the file), regressed without an engine on (1, routed expert
    FLOPs, hit experts' weights at HBM peak), relative and non-negative. Used where a fit has
    no MoE step of its own."""
    import json

    from scipy.optimize import nnls

    from simkv.config.store import compose
    from simkv.entities.hardware import load_profile
    from simkv.perf.roofline import CostModel, experts_hit
    from simkv.validation.campaign import profile_for

    path = Path(path)
    d = pd.read_csv(path)
    missing = [c for c in ("model", "tokens", "part", "ms") if c not in d]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    env = path.parent / "environment.json"
    hw = load_profile(profile_for(json.loads(env.read_text()) if env.is_file() else {}, path.parent))
    x, y = [], []
    for shape, g in d[d["part"] == "block"].groupby("model"):
        m = compose([f"model={shape}"]).model
        cost = CostModel(m, hw)
        for t, ms in zip(g["tokens"], g["ms"], strict=True):
            took = float(ms) / 1e3
            base = sum(op.seconds for op in cost._moe(int(t)))
            hit = experts_hit(m.num_experts, m.experts_per_token, float(t))
            x.append(np.array([1.0, 6.0 * m.experts_per_token * m.hidden_size * m.ffn_size * t,
                               hit * 3.0 * m.hidden_size * m.ffn_size * m.weight_bytes_per_param
                               / hw.hbm_bandwidth]) / took)
            y.append((took - base) / took)
    if not x:
        raise ValueError(f"{path}: no 'block' rows to fit the MoE terms on")
    xa = np.vstack(x)
    scale = np.abs(xa).max(axis=0)
    coef = nnls(xa / scale, np.asarray(y))[0] / scale
    return dict(zip(MOE_TERMS, map(float, coef), strict=True))


def fit_engine(data: Iterable[tuple[StepData, np.ndarray]],
               moe_prior: dict[str, float] | None = None) -> EngineConfig:
    """Non-negative least squares of each steady step's time beyond simkv's GPU price on
    ``step_columns``, relative (each row divided by its measured time, so short decode steps
    weigh as much as long prefill ones), pooled over runs of any shape; the query tile is
    the one of ``QUERY_TILES`` with the least residual. Then the capture terms on the steps
    that recorded a graph (``CAPTURE``). ``data``: (a run's steps, a mask of the steps to fit
    on)."""
    from scipy.optimize import lsq_linear

    data = [(s, mask) for s, mask in data if mask.any()]
    steady = [(s, mask & ~s.captured) for s, mask in data]
    steady = [(s, m) for s, m in steady if m.any()]
    if not steady:
        raise ValueError("no steps to fit on")
    # A dimension the fitted steps do not vary cannot be told apart from its neighbour: with
    # one layer count, a fixed time per step from one per layer; with one KV width, attention
    # per KV element from attention per layer. Then only the term the five-shape H200 fit
    # found carrying it is fitted (per layer; per padded KV token and layer).
    names = list(COLUMNS)
    # Time per prefill token is GPU time per dense GEMM FLOP: fits that can tell the two apart
    # (shapes of 2.7-68 GFLOP per token) put 0.3-0.8 us per token on the host and the rest on
    # the FLOPs (Qwen2.5-14B's prefill tokens cost 1.9x Llama-8B's); one host time per token
    # priced Qwen2.5-14B's 2,048-token steps 7% short and Mixtral's 11% long.
    drop = {names.index("prefill")}
    if len({s.run.spec.num_layers for s, _ in steady}) == 1:
        drop.add(names.index("one"))
    if len({max(1.0, s.run.spec.num_kv_heads / s.run.tp) * s.run.spec.head_dim
            for s, _ in steady}) == 1:
        drop.add(names.index("kv_elem"))
    best: tuple[float, int, np.ndarray] | None = None
    for tile in QUERY_TILES:
        x = np.vstack([s.columns[tile][m] / s.measured[m, None] for s, m in steady])
        y = np.concatenate([(s.measured[m] - s.base[m]) / s.measured[m] for s, m in steady])
        seen = np.abs(x).max(axis=0) > 0  # a term none of the fitted steps has stays 0
        seen[list(drop)] = False
        coef = np.zeros(x.shape[1])
        scale = np.abs(x[:, seen]).max(axis=0)  # well-conditioned columns
        sol = lsq_linear(x[:, seen] / scale, y, bounds=(0.0, np.inf), method="bvls")
        coef[seen] = sol.x / scale
        if best is None or sol.cost < best[0]:
            best = (float(sol.cost), tile, coef)
    assert best is not None
    _, tile, coef = best
    fitted = {COLUMNS[c]: float(v) for c, v in zip(COLUMNS, coef, strict=True)}
    moe_col = list(COLUMNS).index("moe_layers")
    if moe_prior and not any((s.columns[tile][m][:, moe_col] > 0).any() for s, m in steady):
        fitted.update(moe_prior)  # no MoE step in the fit: the MoE layers' kernel timings
    # Captures: the same rows' price with the fitted engine, and what the step took beyond it.
    full, took, layers, moe = [], [], [], []
    for s, mask in data:
        m = mask & s.captured & (s.base > 0)
        if m.any():
            full.append(s.base[m] + s.columns[tile][m] @ coef)
            took.append(s.measured[m])
            layers.append(np.full(int(m.sum()), float(s.run.spec.num_layers)))
            moe.append(np.full(int(m.sum()), float(capture_moe_layers(s.run.spec))))
    if full:
        p, t, n = np.concatenate(full), np.concatenate(took), np.concatenate(layers)
        nm = np.concatenate(moe)
        # Relative, as the steady fit: each capture weighs alike whatever its size. The MoE
        # layers' term only where an MoE model captured (Mixtral's 16 layers captured in as
        # long as Llama's 32: 71-121 ms against 76-125 ms beyond the step's own price).
        x = np.c_[np.ones_like(p), n, nm, p] / t[:, None]
        cols = [0, 1, 2, 3] if nm.any() else [0, 1, 3]
        sol = lsq_linear(x[:, cols], (t - p) / t, bounds=(0.0, np.inf), method="bvls")
        found = np.zeros(4)
        found[cols] = sol.x
        fitted.update(dict(zip(CAPTURE, map(float, found), strict=True)))
    return EngineConfig(**fitted, attention_query_tile=tile if tile > 1 else 0)


def capture_moe_layers(m: Any) -> int:
    """The MoE layers a CUDA-graph capture of a step records (0 for a dense model)."""
    return int(m.moe_layers) if m.is_moe else 0


def for_run(engine: EngineConfig, run: Run) -> EngineConfig:
    """A fitted engine with this run's own padding (from its engine.json; a folder that does
    not record how its engine was configured keeps the engine's)."""
    if "cb_config" not in run.engine:
        return engine
    base = engine_base(run)
    return dataclasses.replace(engine, kv_padding_tokens=base.kv_padding_tokens,
                               query_padding_tokens=base.query_padding_tokens,
                               padded_logits_rows=base.padded_logits_rows)


def predict_stream(run: Run, tag: str, profile: str | None, engine: EngineConfig,
                   captures: bool = True) -> pd.DataFrame:
    """simkv's TTFT, TPOT and E2E for every request of a stream, replayed at its arrivals
    (``schedule.free_running``: the replica's loop, equal to a full simkv run of
    ``sim_config``); ``attrs["steps"]`` holds simkv's steps (sequences, tokens, KV read,
    captures) for the per-step comparison."""
    from simkv.validation.schedule import free_running, limits

    eng = for_run(engine, run)
    cfg = sim_config(run, profile, eng, tag, captures)
    if run.engine.get("scheduler") == "vllm":
        from simkv.validation.compare import predict

        pred = predict(run.requests[tag], cfg)
        pred.attrs["steps"] = pd.DataFrame(columns=["sim_sequences", "sim_tokens", "sim_captured"])
        return pred
    steps, pred = free_running(run.requests[tag], limits(run.engine), cost_model(run, profile, eng),
                               cfg.scheduler)  # type: ignore[arg-type]
    pred.attrs["steps"] = steps
    return pred


def step_errors(s: StepData, engine: EngineConfig, profile: str | None, mask: np.ndarray
                ) -> dict[str, float]:
    """Median APE of simkv's price of each held-out step: decode-only and prefill steps
    (steady), and steps that recorded a CUDA graph (with the capture terms)."""
    cost = cost_model(s.run, profile, for_run(engine, s.run))
    t = price(s.plans, cost)
    ape = np.abs(t / s.measured - 1) * 100
    pre = np.array([p is not None and p.prefill_tokens > 0 for p in s.plans])
    steady = mask & ~s.captured & np.isfinite(t)
    cap = mask & s.captured & np.isfinite(t)
    cap_t = (t[cap] * (1 + engine.graph_capture_factor) + engine.graph_capture_s
             + engine.graph_capture_layer_s * s.run.spec.num_layers
             + engine.graph_capture_moe_layer_s * capture_moe_layers(s.run.spec))

    def med(x: np.ndarray) -> float:
        return float(np.median(x)) if len(x) else float("nan")

    return {"decode_steps": med(ape[steady & ~pre]), "prefill_steps": med(ape[steady & pre]),
            "capture_steps": med(np.abs(cap_t / s.measured[cap] - 1) * 100)}
