"""A BurstGPT-shaped request stream, from published statistics of the real trace.

Three layers, each parameterised from ../shared/data/burstgpt/STATS.md (sources inline):

1. *Hourly volume*: the number of requests in each trace hour. ``volume=gamma`` draws it
   i.i.d.: an hour is empty with the measured share (28.3% of BurstGPT_1's 1,461 hours),
   otherwise Gamma with shape 0.2752, fitted by moments to the non-empty hours so the
   series has the real CV (2.338). ``volume=replay`` replays the real hourly series of
   BurstGPT_1 from its derived CSV (``volume_path``). ``volume=flat``: every hour the mean.
   ``volume=profile``: hour h carries ``volume_profile[h]`` times the mean (cycled), a
   burst placed by hand (experiments/elastic_moe.py: an hour at 4x the mean).
   Counts are scaled so the long-run mean rate is ``mean_rate``; one trace hour lasts
   ``hour_s`` simulated seconds (compress time to see hours of bursts in a short run).
2. *Within an hour*: a Gamma renewal process conditioned on the hour's count; shape 0.5 is
   the official BurstGPT generator's default (shape < 1 means bursty, CV of gaps ~1.4).
3. *Each request*: model and log type drawn with the shares of BurstGPT_without_fails_1
   (84.68% ChatGPT; 89.62% API log), prompt and response tokens from the published
   percentiles of BurstGPT_1's first 60k rows (log-linear inverse CDF; the p75 knot is
   solved so the mean equals the published mean), failed (zero response tokens) with the
   measured 1.780% rate.

workloads/fit_burstgpt.py regenerates the volume numbers from the real aggregates.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simkv.config.bounds import bounded, check, meta, require
from simkv.registry import register
from simkv.workload.base import ArrivalBatch, OpenLoop
from simkv.workload.distributions import from_quantiles, tokens
from simkv.workload.streamed import ConditionedRenewal, advance, can_stream, copy_at

CHUNK = 65536
# Hours of more requests than this are drawn in pieces of CHUNK (workload/streamed.py): the
# same values in bounded memory. Below it, one draw (cheaper).
BIG_HOUR = 4 * CHUNK
TRACE_MEAN_PER_HOUR = 978.6  # BurstGPT_1: 1,429,737 requests over 1,461 hours

# Hour-of-day profile of requests (mean 1), BurstGPT_1, STATS.md section 3.
HOUR_OF_DAY = [0.95, 0.90, 0.57, 0.52, 0.37, 0.35, 0.20, 0.22, 0.32, 0.39, 0.89, 1.29, 1.79,
               1.51, 1.85, 1.44, 1.49, 1.37, 1.23, 1.63, 1.38, 1.19, 1.11, 1.03]


@dataclass(slots=True)
class BurstGPTWorkloadConfig:
    num_requests: int = bounded(3000, ge=1)
    # Long-run mean rate (requests/s); hourly volumes vary around it with the real CV.
    mean_rate: float = bounded(40.0, gt=0)
    # Simulated seconds per trace hour (3600 = real time).
    hour_s: float = bounded(10.0, gt=0)
    # gamma | replay | flat | profile (module docstring).
    volume: str = bounded("gamma", choices=("gamma", "replay", "flat", "profile"))
    volume_path: str | None = None
    # volume=profile: each hour's volume as a multiple of the mean, cycled.
    volume_profile: list[float] = field(default_factory=lambda: [1.0], metadata=meta(ge=0))
    start_hour: int = bounded(0, ge=0)
    empty_hour_share: float = bounded(0.2834, ge=0, lt=1)
    hour_gamma_shape: float = bounded(0.2752, gt=0)
    # Multiply hourly volumes by the hour-of-day profile (adds a diurnal cycle on top).
    diurnal: bool = False
    arrival_gamma_shape: float = bounded(0.5, gt=0)
    models: list[str] = field(default_factory=lambda: ["ChatGPT", "GPT-4"])
    model_weights: list[float] = field(default_factory=lambda: [0.8468, 0.1532], metadata=meta(ge=0))
    log_types: list[str] = field(default_factory=lambda: ["API log", "Conversation log"])
    log_type_weights: list[float] = field(default_factory=lambda: [0.8962, 0.1038],
                                            metadata=meta(ge=0))
    # (quantile, tokens) knots: quantiles from 0 to 1, token counts >= 1 (checked in validate).
    prompt_quantiles: list[list[float]] = field(default_factory=lambda: [
        [0.0, 1], [0.5, 74], [0.75, 365], [0.9, 1291], [0.95, 1697], [0.99, 3023], [1.0, 6142]])
    output_quantiles: list[list[float]] = field(default_factory=lambda: [
        [0.0, 1], [0.5, 14], [0.75, 99], [0.9, 401], [0.95, 510], [0.99, 757], [1.0, 7315]])
    failure_rate: float = bounded(0.0178, ge=0, lt=1)

    def __post_init__(self) -> None:
        check(self, "workload.")

    def validate(self, prefix: str = "workload.") -> None:
        require(self.volume != "replay" or bool(self.volume_path),
                f"{prefix}volume=replay needs {prefix}volume_path (a BurstGPT "
                f"burstgpt1_sessions_by_trace_hour_*.csv)")
        require(self.volume != "profile" or (len(self.volume_profile) > 0
                                             and sum(self.volume_profile) > 0),
                f"{prefix}volume_profile: expected multiples of the mean rate, >= 0 and not all "
                f"0, got {self.volume_profile}")
        for names, weights in (("models", "model_weights"), ("log_types", "log_type_weights")):
            n, w = getattr(self, names), getattr(self, weights)
            require(len(n) == len(w) and len(n) > 0,
                    f"{prefix}{weights}: expected one weight per entry of {prefix}{names} "
                    f"({len(n)}), got {len(w)}")
            require(sum(w) > 0, f"{prefix}{weights}: expected a positive sum, got {w}")
        for key in ("prompt_quantiles", "output_quantiles"):
            knots = getattr(self, key)
            ok = all(len(k) == 2 and all(math.isfinite(x) for x in k) for k in knots)
            q = [k[0] for k in knots] if ok else []
            v = [k[1] for k in knots] if ok else []
            require(ok and len(knots) >= 2 and q[0] == 0 and q[-1] == 1
                    and all(b > a for a, b in itertools.pairwise(q))
                    and v[0] >= 1 and all(b >= a for a, b in itertools.pairwise(v)),
                    f"{prefix}{key}: expected [quantile, tokens] pairs with quantiles rising from "
                    f"0 to 1 and tokens >= 1 not falling, got {knots}")


def replay_hours(path: str) -> np.ndarray:
    """Requests per trace hour of BurstGPT_1 from its derived per-hour session CSV."""
    import pandas as pd  # only here: importing simkv.workload stays light (simkv --help)

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"workload.volume_path: {path} not found")
    df = pd.read_csv(file)
    missing = {"time_bin", "avg_turns", "session_count"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected a BurstGPT "
                         f"burstgpt1_sessions_by_trace_hour_*.csv")
    hours = (df["time_bin"] // 3600).astype(int).to_numpy()
    counts = np.zeros(hours.max() + 1)
    counts[hours] = np.rint(df["avg_turns"] * df["session_count"])
    return counts


@register("workload", "burstgpt", BurstGPTWorkloadConfig)
class BurstGPTWorkload(OpenLoop):
    def __init__(self, cfg: BurstGPTWorkloadConfig, **_: object) -> None:
        self.cfg = cfg

    def expected_requests(self) -> int | None:
        return self.cfg.num_requests

    def hourly_volumes(self, rng: np.random.Generator, hours: int, first: int = 0) -> np.ndarray:
        """Requests per hour for ``hours`` hours from hour ``first``, scaled to the mean rate."""
        cfg = self.cfg
        at = cfg.start_hour + first + np.arange(hours)
        scale = cfg.mean_rate * cfg.hour_s / TRACE_MEAN_PER_HOUR
        if cfg.volume == "replay":
            real = replay_hours(cfg.volume_path or "")
            idx = at % len(real)
            base = real[idx] * (TRACE_MEAN_PER_HOUR / real.mean())
        elif cfg.volume == "flat":
            base = np.full(hours, TRACE_MEAN_PER_HOUR)
        elif cfg.volume == "profile":
            prof = np.asarray(cfg.volume_profile, dtype=np.float64)
            base = TRACE_MEAN_PER_HOUR * prof[at % len(prof)]
        else:
            k = cfg.hour_gamma_shape
            nonzero_mean = TRACE_MEAN_PER_HOUR / (1 - cfg.empty_hour_share)
            # A non-empty hour holds at least one request (the Gamma has mass near 0 that
            # would otherwise round to extra empty hours).
            base = np.maximum(rng.gamma(k, nonzero_mean / k, hours), 1.0)
            base[rng.random(hours) < cfg.empty_hour_share] = 0.0
        if cfg.diurnal:
            base = base * np.asarray(HOUR_OF_DAY)[at % 24]
        return base * scale

    def arrivals(self, rng: np.random.Generator) -> Iterator[ArrivalBatch]:
        cfg = self.cfg
        left = cfg.num_requests
        hour = 0
        pending: list[np.ndarray | ConditionedRenewal] = []
        pending_n = 0
        streams = can_stream(rng)
        while left > 0:
            # Draw volumes a block of hours at a time; round with a random remainder so
            # small scaled volumes keep their mean.
            volumes = self.hourly_volumes(rng, 256, hour)
            counts = np.floor(volumes + rng.random(len(volumes))).astype(np.int64)
            counts[(volumes > 0) & (counts == 0)] = 1
            for c in counts:
                if left <= 0:
                    break
                c = int(min(c, left))
                if c:
                    # An hour too large to hold is drawn in pieces, to the same values
                    # (workload/streamed.py): it is the batch's last part (c > CHUNK).
                    pending.append(ConditionedRenewal(rng, cfg.arrival_gamma_shape, c,
                                                      hour * cfg.hour_s, cfg.hour_s)
                                   if streams and c > BIG_HOUR else
                                   hour * cfg.hour_s + self._within_hour(rng, c))
                    pending_n += c
                    left -= c
                hour += 1
                if pending_n >= CHUNK:
                    yield from self._batches(rng, pending, pending_n)
                    pending, pending_n = [], 0
        if pending_n:
            yield from self._batches(rng, pending, pending_n)

    def _batches(self, rng: np.random.Generator, parts: list[np.ndarray | ConditionedRenewal],
                 n: int) -> Iterator[ArrivalBatch]:
        """The requests at the ``n`` arrival times of ``parts``: one batch, drawn as one; or,
        with an hour drawn in pieces, pieces of at most CHUNK requests whose every column is
        drawn by a cursor where the whole batch's draw of it would start (``rng`` moves past
        them all at once, before the first piece, as the one draw would move it)."""
        if all(isinstance(p, np.ndarray) for p in parts):
            yield self._requests((rng,) * 5, np.concatenate(parts))  # type: ignore[arg-type]
            return
        cursors = tuple(copy_at(rng, i * n) for i in range(5))
        advance(rng, 5 * n)
        for part in parts:
            pieces = (part.pieces(CHUNK) if isinstance(part, ConditionedRenewal) else
                      (part[a:a + CHUNK] for a in range(0, len(part), CHUNK)))
            for t in pieces:
                yield self._requests(cursors, t)

    def _within_hour(self, rng: np.random.Generator, n: int) -> np.ndarray:
        gaps = rng.gamma(self.cfg.arrival_gamma_shape, 1.0, n + 1)
        return np.cumsum(gaps)[:n] / gaps.sum() * self.cfg.hour_s

    def _requests(self, rngs: tuple[np.random.Generator, ...], t: np.ndarray) -> ArrivalBatch:
        """Requests at times ``t``; their models, log types, prompt and output lengths and
        failures drawn by ``rngs`` in that order (one generator five times: one after the
        other, as one batch has always drawn them)."""
        cfg = self.cfg
        n = len(t)
        models, logs, prompts, outputs, fails = rngs
        mw = np.asarray(cfg.model_weights) / sum(cfg.model_weights)
        lw = np.asarray(cfg.log_type_weights) / sum(cfg.log_type_weights)
        model_idx = models.choice(len(mw), n, p=mw)
        log_idx = logs.choice(len(lw), n, p=lw)
        return ArrivalBatch(
            arrival_s=t,
            prompt_tokens=tokens(from_quantiles(prompts, cfg.prompt_quantiles, n)),
            output_tokens=tokens(from_quantiles(outputs, cfg.output_quantiles, n)),
            model=[cfg.models[i] for i in model_idx.tolist()],
            log_type=[cfg.log_types[i] for i in log_idx.tolist()],
            failed=fails.random(n) < cfg.failure_rate,
        )
