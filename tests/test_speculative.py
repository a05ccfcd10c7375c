"""Speculative decoding (speculative=draft, eagle, ngram): exact outputs, acceptance, costs,
memory, and the combinations refused (docs/SCHEDULING.md)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import simkv
from simkv.entities.request import Request
from simkv.policies.speculative import NgramConfig
from simkv.policies.speculative.methods import Ngram
from tests.conftest import small

LOW = ["workload.num_requests=120", "workload.rate=2"]
TIMES = ["first_scheduled_s", "first_token_s", "completion_s", "ttft_s", "tpot_s", "e2e_s"]


def run(overrides: list[str], tmp_path, name: str = "run"):
    def observe(replica) -> None:
        replica.scheduler.check_invariants()

    res = simkv.simulate(small(overrides), tmp_path / name, observer=observe)
    return res, res.requests.sort_values("request_id").reset_index(drop=True)


def test_steps_emit_exactly_the_remaining_tokens_with_the_formula_mean() -> None:
    spec = Ngram(NgramConfig(num_speculative_tokens=4, acceptance=0.6), seed=1)
    total_steps = 0
    for i in range(400):
        steps = spec.emitted(Request(i, 0.0, 10, 500), 499, 0)
        assert steps.sum() == 499
        assert steps.min() >= 1
        assert steps.max() <= 5
        total_steps += len(steps)
    mean = 400 * 499 / total_steps
    assert mean == pytest.approx((1 - 0.6 ** 5) / (1 - 0.6), rel=0.02)
    again = Ngram(NgramConfig(num_speculative_tokens=4, acceptance=0.6), seed=1)
    assert np.array_equal(again.emitted(Request(7, 0.0, 10, 500), 499, 0),
                          spec.emitted(Request(7, 0.0, 10, 500), 499, 0))


@pytest.mark.parametrize("method", ["draft", "eagle", "ngram"])
def test_every_request_generates_exactly_its_tokens_and_faster_at_low_load(tmp_path, method) -> None:
    res, got = run([*LOW, f"speculative={method}"], tmp_path, method)
    _, ref = run(LOW, tmp_path, "ref")
    assert (got["status"] == ref["status"]).all()
    assert (got["output_tokens"] == ref["output_tokens"]).all()
    spec = res.summary["speculative"]
    k = {"draft": 5, "eagle": 5, "ngram": 10}[method]
    assert spec["proposed_tokens"] == k * spec["steps"]
    # Every decode step after the prefill's first token: output - 1 tokens per request.
    done = got[got["status"] == "finished"]
    assert spec["accepted_tokens"] + spec["steps"] == int((done["output_tokens"] - 1).sum())
    if method != "draft":  # llama3_2_1b's 5 steps cost more than they save on an H100
        assert got["tpot_s"].mean() < 0.9 * ref["tpot_s"].mean()


def test_fast_forward_equals_step_by_step_with_speculation(tmp_path) -> None:
    base = ["workload.num_requests=150", "workload.rate=20", "speculative=eagle",
            "kv.num_gpu_blocks_override=600"]
    _, a = run([*base, "engine.max_fast_forward=4096"], tmp_path, "fast")
    _, b = run([*base, "engine.max_fast_forward=1"], tmp_path, "slow")
    assert a["preemptions"].sum() > 0
    pd.testing.assert_frame_equal(a.drop(columns=TIMES), b.drop(columns=TIMES))
    for col in TIMES:
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-12)


def test_speculation_is_deterministic_and_keeps_the_prefix_cache(tmp_path) -> None:
    base = ["workload=shared_prefix", "workload.num_requests=80", "speculative=ngram"]
    _, a = run(base, tmp_path, "a")
    _, b = run(base, tmp_path, "b")
    pd.testing.assert_frame_equal(a, b)
    assert a["cached_tokens"].sum() > 0


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_acceptance_by_log_type_changes_only_that_service(tmp_path) -> None:
    base = ["workload=burstgpt", "workload.num_requests=300", "speculative=ngram"]
    res, _ = run(base, tmp_path, "plain")
    res2, _ = run([*base, "+speculative.acceptance_by_log_type={Conversation log: 0.9}"],
                  tmp_path, "conv")
    assert res2.summary["speculative"]["tokens_per_step"] > res.summary["speculative"]["tokens_per_step"]


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_the_draft_takes_kv_memory(tmp_path) -> None:
    plain, _ = run(LOW, tmp_path, "plain")
    draft, _ = run([*LOW, "speculative=draft"], tmp_path, "draft")
    ngram, _ = run([*LOW, "speculative=ngram"], tmp_path, "ngram")
    blocks = {n: r.summary["engine"]["kv_blocks_per_replica"] for n, r in
              (("plain", plain), ("draft", draft), ("ngram", ngram))}
    assert blocks["ngram"] == blocks["plain"]
    assert blocks["draft"] < blocks["plain"]


@pytest.mark.parametrize(("overrides", "words"), [
    (["speculative=draft", "scheduler=static"], "speculative=draft needs a continuous-batching"),
    (["speculative=eagle", "kv_policy=h2o", "kv.prefix_caching=false"], "kv_policy=h2o"),
    (["speculative=draft", "speculative.draft_model=llama_68m"], "speculative.draft_model"),
    (["speculative=draft", "speculative.draft_model=gpt5"], "speculative.draft_model"),
    (["speculative=ngram", "speculative.acceptance=1.0"], "speculative.acceptance"),
    (["speculative=ngram", "speculative.num_speculative_tokens=0"], "speculative.num_speculative_tokens"),
    (["speculative=ngram", "+speculative.acceptance_by_log_type={x: 1.5}"],
     "speculative.acceptance_by_log_type.x"),
    # A log type no request has: ran with the method's one acceptance (a typo; poisson's
    # requests have no log type).
    (["speculative=eagle", "workload=burstgpt", "workload.num_requests=20",
      "+speculative.acceptance_by_log_type={Conversation: 0.9}"],
     "speculative.acceptance_by_log_type.Conversation cannot act: no request has log type "
     "'Conversation' (workload.log_types: API log, Conversation log)"),
    (["speculative=eagle", "+speculative.acceptance_by_log_type={x: 0.9}"],
     "speculative.acceptance_by_log_type.x cannot act: no request has log type 'x' "
     "(workload=poisson's requests have no log type)"),
])
def test_combinations_that_cannot_act_are_refused_in_one_line(tmp_path, overrides, words) -> None:
    with pytest.raises(ValueError, match=re.escape(words)) as exc:
        simkv.simulate(small(overrides), tmp_path)
    assert "\n" not in str(exc.value)
