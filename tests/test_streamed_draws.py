"""Draws in pieces give the values of one whole draw (simkv/workload/streamed.py), so BurstGPT's
huge hours stream in bounded memory without moving any result."""

from __future__ import annotations

import numpy as np
import pytest

import simkv.workload.burstgpt as burstgpt
from simkv.workload.burstgpt import BurstGPTWorkload, BurstGPTWorkloadConfig
from simkv.workload.streamed import ConditionedRenewal, _pairwise_is_numpys, can_stream, copy_at, pairwise_sum


@pytest.mark.parametrize("n", [1, 7, 8, 129, 1000, 4097, 50_001])
@pytest.mark.parametrize("leaf", [128, 1000, 1 << 16])
def test_pairwise_sum_is_numpys_sum_of_the_whole_draw(n: int, leaf: int) -> None:
    whole = np.random.default_rng(n).gamma(0.5, 1.0, n)
    rng = np.random.default_rng(n)
    seen: list[np.ndarray] = []

    def draw(m: int) -> np.ndarray:
        assert m <= leaf
        seen.append(rng.gamma(0.5, 1.0, m))
        return seen[-1]

    assert pairwise_sum(draw, n, leaf) == np.add.reduce(whole)  # the same float, not close
    np.testing.assert_array_equal(np.concatenate(seen), whole)


def test_a_renewal_in_pieces_is_the_whole_draw_and_moves_the_generator_alike() -> None:
    n, shape, offset, span = 30_011, 0.5, 600.0, 300.0
    rng = np.random.default_rng(5)
    gaps = rng.gamma(shape, 1.0, n + 1)
    whole = offset + np.cumsum(gaps)[:n] / gaps.sum() * span
    streamed_rng = np.random.default_rng(5)
    r = ConditionedRenewal(streamed_rng, shape, n, offset, span)
    assert streamed_rng.random() == rng.random()  # the first pass advanced it exactly
    for size in (1, 977, n, 2 * n):
        pieces = list(r.pieces(size))
        assert max(len(p) for p in pieces) <= size
        np.testing.assert_array_equal(np.concatenate(pieces), whole)


def test_a_cursor_is_a_copy_ahead() -> None:
    rng = np.random.default_rng(3)
    ahead = copy_at(rng, 1000)
    first = rng.random(1000)
    assert ahead.random() == rng.random()
    assert copy_at(rng).random(5).tolist() == rng.random(5).tolist()
    assert first.size == 1000


def _stream(cfg: BurstGPTWorkloadConfig) -> tuple[dict[str, np.ndarray], int, float]:
    rng = np.random.default_rng(11)
    batches = list(BurstGPTWorkload(cfg).arrivals(rng))
    cols = {k: np.concatenate([np.asarray(getattr(b, k)) for b in batches])
            for k in ("arrival_s", "prompt_tokens", "output_tokens", "model", "log_type", "failed")}
    return cols, max(len(b) for b in batches), rng.random()


def test_burstgpt_streams_its_big_hours_to_the_same_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    # Hours of ~2,000 requests, CHUNK 500: every hour is a batch's last part; a big one
    # (> 1,500) streams in pieces of 500 with cursors for its columns.
    cfg = BurstGPTWorkloadConfig(num_requests=40_000, mean_rate=10.0, hour_s=200.0, volume="gamma")
    monkeypatch.setattr(burstgpt, "CHUNK", 500)
    monkeypatch.setattr(burstgpt, "BIG_HOUR", 10**12)
    whole, largest_whole, after_whole = _stream(cfg)
    monkeypatch.setattr(burstgpt, "BIG_HOUR", 1500)
    streamed, largest, after = _stream(cfg)
    # The test exercises the streamed path; a batch is at most CHUNK + BIG_HOUR requests.
    assert largest_whole > 2000 >= largest
    for k, v in whole.items():
        np.testing.assert_array_equal(streamed[k], v, err_msg=k)
    assert after == after_whole  # the generator ends where the whole draws leave it


def test_an_hour_past_many_leaves_streams_to_the_same_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    # One flat hour of 300,000 requests: its sum spans several leaves of pairwise_sum, where
    # numpy before 2.3 sums otherwise (can_stream then draws it whole: equal either way).
    cfg = BurstGPTWorkloadConfig(num_requests=300_000, mean_rate=1000.0, hour_s=300.0, volume="flat")
    monkeypatch.setattr(burstgpt, "BIG_HOUR", 10**12)
    whole, _, after_whole = _stream(cfg)
    monkeypatch.undo()
    streamed, largest, after = _stream(cfg)
    assert largest <= burstgpt.CHUNK or not can_stream(np.random.default_rng(0))
    for k, v in whole.items():
        np.testing.assert_array_equal(streamed[k], v, err_msg=k)
    assert after == after_whole


def test_only_word_by_word_generators_stream() -> None:
    assert can_stream(np.random.default_rng(0)) == _pairwise_is_numpys()
    assert not can_stream(np.random.Generator(np.random.Philox(1)))  # advances by 4 words
    assert not can_stream(np.random.Generator(np.random.MT19937(1)))  # cannot advance
    assert not can_stream(np.random.RandomState(0))  # (legacy: still accepted, drawn whole)
    batches = list(BurstGPTWorkload(BurstGPTWorkloadConfig(num_requests=100)).arrivals(
        np.random.RandomState(0)))
    assert sum(len(b) for b in batches) == 100


def test_a_buffered_32_bit_half_survives_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = BurstGPTWorkloadConfig(num_requests=40_000, mean_rate=10.0, hour_s=200.0, volume="gamma")
    monkeypatch.setattr(burstgpt, "CHUNK", 500)
    states = []
    for big in (10**12, 1500):
        monkeypatch.setattr(burstgpt, "BIG_HOUR", big)
        rng = np.random.default_rng(11)
        rng.integers(0, 10, dtype=np.int32)  # leaves half a word buffered
        list(BurstGPTWorkload(cfg).arrivals(rng))
        states.append(rng.bit_generator.state)
    assert states[0] == states[1]
