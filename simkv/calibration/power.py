"""GPU power on the lent machine: a sampler, and loops that tie power to what the GPU does.

    python -m simkv.calibration.power sample --out power.csv [--interval 0.05]   # until killed
    python -m simkv.calibration.power loops --out loops.csv [--seconds 2]

Why (issue 24): a power model per GPU needs idle power and dynamic power as a function of the
work (FLOPs, HBM bytes), fitted on measured power during known kernels and held out on engine
replays. ``sample`` reads NVML every ``interval`` seconds (board power as the driver averages
it, the instantaneous power where the driver has it, the energy counter, clocks, utilisation,
temperature, clock-event reasons) and stamps each row with ``time.perf_counter`` (the
system's monotonic clock, the same one the engine's token timestamps use, so rows align with
replays) and the Unix time. ``loops`` runs each workload back to back for ``seconds`` and
writes its achieved FLOP/s and bytes/s beside the energy the counter saw over exactly that
loop (its mean power). Clocks and power limits are never touched: the card is measured as
found (its limit is read and recorded).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Nvml:
    """The few NVML reads the sampler needs; every read that fails gives NaN, never an error."""

    def __init__(self, index: int = 0) -> None:
        import pynvml

        self.n = pynvml
        pynvml.nvmlInit()
        self.h = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.instant_field = getattr(pynvml, "NVML_FI_DEV_POWER_INSTANT", None)

    def _get(self, fn: Callable[[], Any], scale: float = 1.0) -> float:
        try:
            return float(fn()) * scale
        except Exception:  # not supported on this driver or GPU: record NaN
            return float("nan")

    def instant_w(self) -> float:
        if self.instant_field is None:
            return float("nan")
        try:
            fv = self.n.nvmlDeviceGetFieldValues(self.h, [self.instant_field])[0]
            if getattr(fv, "nvmlReturn", 1) != 0:
                return float("nan")
            return float(fv.value.uiVal) / 1e3
        except Exception:
            return float("nan")

    def energy_j(self) -> float:
        return self._get(lambda: self.n.nvmlDeviceGetTotalEnergyConsumption(self.h), 1e-3)

    def read(self) -> dict[str, float]:
        n, h = self.n, self.h
        util = None
        with contextlib.suppress(Exception):
            util = n.nvmlDeviceGetUtilizationRates(h)
        reasons = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            n, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        return {
            "power_w": self._get(lambda: n.nvmlDeviceGetPowerUsage(h), 1e-3),
            "power_instant_w": self.instant_w(),
            "energy_j": self.energy_j(),
            "sm_mhz": self._get(lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
            "mem_mhz": self._get(lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM)),
            "util_gpu": float(util.gpu) if util is not None else float("nan"),
            "util_mem": float(util.memory) if util is not None else float("nan"),
            "temp_c": self._get(lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
            "clock_reasons": self._get(lambda: reasons(h)) if reasons else float("nan"),
        }

    def static(self) -> dict[str, Any]:
        n, h = self.n, self.h
        out: dict[str, Any] = {}
        for key, fn in (("name", lambda: n.nvmlDeviceGetName(h)),
                        ("driver", lambda: n.nvmlSystemGetDriverVersion()),
                        ("power_limit_w", lambda: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1e3),
                        ("power_default_limit_w",
                         lambda: n.nvmlDeviceGetPowerManagementDefaultLimit(h) / 1e3),
                        ("max_sm_mhz", lambda: n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_SM)),
                        ("max_mem_mhz", lambda: n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_MEM))):
            try:
                v = fn()
                out[key] = v.decode() if isinstance(v, bytes) else v
            except Exception as exc:
                out[key] = f"unavailable: {type(exc).__name__}"
        return out


SAMPLE_FIELDS = ["perf_s", "unix_s", "power_w", "power_instant_w", "energy_j", "sm_mhz", "mem_mhz",
                 "util_gpu", "util_mem", "temp_c", "clock_reasons"]


def sample(out: Path, interval: float, duration: float) -> None:
    """Write one row per ``interval`` until ``duration`` passes or the process is terminated."""
    nv = Nvml()
    out.with_suffix(".json").write_text(json.dumps(nv.static(), indent=1) + "\n")
    stop = {"now": False}

    def handler(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    with out.open("w", newline="", buffering=1) as f:
        w = csv.DictWriter(f, fieldnames=SAMPLE_FIELDS)
        w.writeheader()
        t_end = time.perf_counter() + duration
        nxt = time.perf_counter()
        while not stop["now"] and time.perf_counter() < t_end:
            row = {"perf_s": time.perf_counter(), "unix_s": time.time(), **nv.read()}
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) and k.endswith("_s") else v)
                        for k, v in row.items()})
            nxt += interval
            time.sleep(max(0.0, nxt - time.perf_counter()))


# --- characterisation loops -------------------------------------------------------------------

@dataclass
class Workload:
    """One loop: ``run`` launches one iteration; it moves ``bytes`` through device memory (each
    operand read once, each result written once) and does ``flop`` floating-point operations."""

    name: str
    kind: str
    run: Callable[[], Any]
    flop: float
    bytes: float
    note: str = ""


def workloads(device: str, small: bool) -> list[Workload]:
    """Compute-bound GEMMs at several sizes, memory-bound copies and reads, GEMV-like decode
    GEMMs, decode-like and prefill-like attention, and a launch-bound loop of tiny kernels."""
    import torch

    dt = torch.bfloat16
    out: list[Workload] = []

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dt)

    sizes = (256, 128) if small else (8192, 4096, 2048, 1024)
    for s in sizes:
        a, b = r(s, s), r(s, s)
        out.append(Workload(f"gemm_{s}", "gemm_compute", lambda a=a, b=b: a @ b, 2.0 * s**3,
                            3.0 * s * s * 2))
    m_list = (1, 64) if small else (1, 16, 64, 256)
    n, k = (512, 256) if small else (28672, 4096)
    w = [r(n, k) for _ in range(2)]  # two weights: each pass reads one from HBM, not the L2
    for m in m_list:
        x = r(m, k)
        state = {"i": 0}

        def gemv(x: torch.Tensor = x, state: dict = state) -> torch.Tensor:
            state["i"] ^= 1
            return torch.nn.functional.linear(x, w[state["i"]])

        out.append(Workload(f"linear_m{m}_{n}x{k}", "gemm_memory", gemv, 2.0 * m * n * k,
                            2.0 * (n * k + m * k + m * n)))
    numel = (1 << 16) if small else (1 << 29)  # 1 GiB of bf16
    src = torch.empty(numel, device=device, dtype=dt).normal_()
    dst = torch.empty(numel, device=device, dtype=dt)
    out.append(Workload("copy_1gib", "memory", lambda: dst.copy_(src), 0.0, 4.0 * numel))
    out.append(Workload("read_sum_1gib", "memory", lambda: src.sum(), float(numel), 2.0 * numel))
    # Decode attention: 64 sequences x 4,096 cached tokens, 32 query heads on 8 KV heads (GQA).
    bsz, kv_len, h, hkv, d = (4, 256, 4, 2, 32) if small else (64, 4096, 32, 8, 128)
    q, kk, vv = r(bsz, h, 1, d), r(bsz, hkv, kv_len, d), r(bsz, hkv, kv_len, d)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    out.append(Workload(f"decode_attn_b{bsz}_kv{kv_len}", "attention_memory",
                        lambda: sdpa(q, kk, vv, enable_gqa=True), 4.0 * bsz * h * kv_len * d,
                        2.0 * (2 * bsz * hkv * kv_len * d + 2 * bsz * h * d)))
    s_len = 256 if small else 4096
    qp, kp, vp = r(1, h, s_len, d), r(1, h, s_len, d), r(1, h, s_len, d)
    out.append(Workload(f"prefill_attn_{s_len}", "attention_compute",
                        lambda: sdpa(qp, kp, vp, is_causal=True), 2.0 * h * s_len * s_len * d,
                        2.0 * 4 * h * s_len * d))
    tiny = torch.ones(1024, device=device, dtype=dt)
    out.append(Workload("tiny_kernels", "launch_bound", lambda: tiny.add_(0.0), 1024.0, 4096.0,
                        "one 1,024-element add per launch: clocks up, little work"))
    return out


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_loops(out: Path, seconds: float, idle_s: float, small: bool = False) -> list[dict[str, Any]]:
    """Idle, every workload for ``seconds``, idle again; one row each, with the energy the
    card's counter saw over the loop (NaN without NVML)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        nv: Nvml | None = Nvml()
    except Exception:
        nv = None
    fields = ["name", "kind", "t_start_perf", "t_end_perf", "t_start_unix", "seconds", "iterations",
              "flop_per_iter", "bytes_per_iter", "tflop_per_s", "tbyte_per_s", "energy_j", "mean_power_w",
              "sm_mhz_end", "note"]
    rows: list[dict[str, Any]] = []
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()

        def record(row: dict[str, Any]) -> None:
            rows.append(row)
            w.writerow(row)
            f.flush()
            print(f"{row['name']:28s} {row['seconds']:5.2f} s  {row['tflop_per_s']:8.2f} TFLOP/s  "
                  f"{row['tbyte_per_s']:6.3f} TB/s  {row['mean_power_w']:7.1f} W", flush=True)

        def idle(name: str) -> None:
            _sync(device)
            t0, e0, u0 = time.perf_counter(), nv.energy_j() if nv else math.nan, time.time()
            time.sleep(idle_s)
            t1, e1 = time.perf_counter(), nv.energy_j() if nv else math.nan
            record({"name": name, "kind": "idle", "t_start_perf": t0, "t_end_perf": t1, "t_start_unix": u0,
                    "seconds": t1 - t0, "iterations": 0, "flop_per_iter": 0, "bytes_per_iter": 0,
                    "tflop_per_s": 0.0, "tbyte_per_s": 0.0, "energy_j": e1 - e0,
                    "mean_power_w": (e1 - e0) / (t1 - t0),
                    "sm_mhz_end": nv.read()["sm_mhz"] if nv else math.nan, "note": ""})

        idle("idle_start")
        for wl in workloads(device, small):
            try:
                for _ in range(3):
                    wl.run()
                _sync(device)
                t = time.perf_counter()
                for _ in range(5):
                    wl.run()
                _sync(device)
                per = max((time.perf_counter() - t) / 5, 1e-7)
                chunk = max(1, min(10000, int(0.1 / per)))  # sync about every 0.1 s
                iters = 0
                t0, e0, u0 = time.perf_counter(), nv.energy_j() if nv else math.nan, time.time()
                while time.perf_counter() - t0 < seconds:
                    for _ in range(chunk):
                        wl.run()
                    iters += chunk
                    _sync(device)
                t1, e1 = time.perf_counter(), nv.energy_j() if nv else math.nan
                dt = t1 - t0
                record({"name": wl.name, "kind": wl.kind, "t_start_perf": t0, "t_end_perf": t1,
                        "t_start_unix": u0, "seconds": dt, "iterations": iters,
                        "flop_per_iter": wl.flop, "bytes_per_iter": wl.bytes,
                        "tflop_per_s": wl.flop * iters / dt / 1e12,
                        "tbyte_per_s": wl.bytes * iters / dt / 1e12, "energy_j": e1 - e0,
                        "mean_power_w": (e1 - e0) / dt,
                        "sm_mhz_end": nv.read()["sm_mhz"] if nv else math.nan, "note": wl.note})
            except Exception as exc:  # one workload failing leaves the others' rows
                print(f"{wl.name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        idle("idle_end")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--out", required=True)
    s.add_argument("--interval", type=float, default=0.05)
    s.add_argument("--duration", type=float, default=3600.0)
    lo = sub.add_parser("loops")
    lo.add_argument("--out", required=True)
    lo.add_argument("--seconds", type=float, default=2.0)
    lo.add_argument("--idle", type=float, default=5.0)
    lo.add_argument("--small", action="store_true", help="tiny sizes (a CPU dry run)")
    args = ap.parse_args()
    if args.cmd == "sample":
        sample(Path(args.out), args.interval, args.duration)
    else:
        run_loops(Path(args.out), args.seconds, args.idle, args.small)


if __name__ == "__main__":
    main()
