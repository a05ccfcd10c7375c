"""Why requests were rejected or failed, in words, with the knob that changes it.

The terminal's summary prints ``64 rejected (64 failed in the trace: BurstGPT's 1.78%
failed calls; workload.failure_rate=0 to drop)``: a newcomer's first run rejects requests by
design (the generator reproduces BurstGPT's failed calls), and a bare count reads like a
bug. The reason codes are requests.parquet's ``reject_reason`` (docs/OUTPUTS.md).
"""

from __future__ import annotations

from typing import Any

# reason code -> (what it means, what changes it); {failed_knob} depends on the workload.
REASONS: dict[str, tuple[str, str]] = {
    "failed_in_trace": ("failed in the trace", "{failed_knob}"),
    "max_model_len": ("prompt + output longer than model.max_model_len", "a model with a longer context"),
    "kv_capacity": ("longer than the whole KV pool", "more GPUs (cluster.tensor_parallel) or "
                    "kv.gpu_memory_utilization"),
    "token_budget": ("longer than scheduler.max_num_batched_tokens without chunked prefill",
                     "scheduler.chunked_prefill=true"),
    "reservation": ("longer than the KV reserved per request", "the scheduler's reservation"),
    "shed": ("refused by admission control", "scheduler.shed=none"),
    "var_output": ("output is not its image's tokens", "the workload's output lengths"),
    "no_instance": ("no instance left to serve them", "docs/FAULTS.md"),
    "retries_exhausted": ("lost with their instance more times than allowed", "faults.max_retries"),
}


def failed_knob(config: dict[str, Any] | None) -> str:
    """How to leave the trace's failed requests out, for the run's workload."""
    workload = (config or {}).get("workload", {})
    if "failure_rate" in workload:
        rate = workload["failure_rate"]
        return (f"BurstGPT's {100 * rate:.2f}% failed calls; workload.failure_rate=0 to drop"
                if abs(rate - 0.0178) < 1e-9 else
                f"workload.failure_rate={rate:g}; workload.failure_rate=0 to drop")
    if "failed" in workload:
        return "the trace marks them failed; workload.failed=drop to leave them out"
    return "the workload marks them failed"


def explain(by_reason: dict[str, int], config: dict[str, Any] | None = None) -> str:
    """``64 failed in the trace: ...; 3 longer than ...`` for a ``rejected_by_reason``."""
    parts = []
    for reason, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        what, knob = REASONS.get(reason, (reason, ""))
        knob = knob.format(failed_knob=failed_knob(config))
        parts.append(f"{n} {what}" + (f": {knob}" if knob else ""))
    return "; ".join(parts)
