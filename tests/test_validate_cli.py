"""simkv-validate's command line: subcommands, the documented folder layouts, and one line
for anything else (issue 19, item 7)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from simkv.entry import validate

VAL = Path(__file__).resolve().parents[1] / "validation"
H200 = VAL / "hf_h200_2026-11-30"


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str
            ) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["simkv-validate", *argv])
    try:
        code = validate()
    except SystemExit as exc:  # argparse's --help and usage errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_the_subcommands(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "--help")
    assert code == 0
    for cmd in ("protocol", "predict", "schedule", "pairs", "steps"):
        assert cmd in out
    code, out, _ = run_cli(monkeypatch, capsys, "pairs", "--help")
    assert code == 0
    assert "--fit" in out
    assert "VARIANT" in out


def llama_spec() -> dict:
    return json.loads((H200 / "llama3_8b" / "engine.json").read_text())["model_spec"]


@pytest.mark.slow  # among the quick subset's slowest (CONTRIBUTING.md)
def test_load_named_streams_with_a_model_spec_are_predicted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: requests_<load>.csv streams were skipped silently and the command ended in
    'internal error ... KeyError: split'."""
    folder = tmp_path / "h100_run"
    shutil.copytree(VAL / "hf_h100_2026-11-25_cudagraph_warm3", folder)
    e = json.loads((folder / "engine.json").read_text())
    e["model_spec"] = llama_spec()
    (folder / "engine.json").write_text(json.dumps(e))
    code, out, err = run_cli(monkeypatch, capsys, "predict", str(folder), "--fit",
                             str(H200 / "llama3_8b"))
    assert code == 0, err
    for load in ("0.2", "0.5", "1.2", "3"):
        assert f"| h100_run | {load} |" in out
    assert "internal error" not in err


def test_legacy_forms_still_work(monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "--fit", str(H200 / "qwen2_5_14b"),
                             "--predict", str(H200 / "qwen2_5_14b_call1"))
    assert code == 0, err
    assert "| qwen2_5_14b_call1 | conv-0.3 |" in out


def test_engine_json_without_a_model_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "nomodel"
    shutil.copytree(VAL / "hf_h100_2026-11-25", folder)
    code, _, err = run_cli(monkeypatch, capsys, "predict", "--engine",
                           "transformers_cudagraph_h100", str(folder))
    assert code == 2
    assert "no model_spec" in err
    assert "--model" in err
    assert len(err.strip().splitlines()) == 1
    # ... and with --model it is predicted (a request-level prediction with a preset).
    code, out, err = run_cli(monkeypatch, capsys, "predict", "--engine",
                             "transformers_cudagraph_h100", "--model", "llama3_8b", str(folder))
    assert code == 0, err
    assert "| nomodel | 0.2 |" in out


def other_engine(tmp_path: Path) -> Path:
    """A request-level folder of another engine: arrivals, lengths, TTFT and E2E per request."""
    folder = tmp_path / "other"
    folder.mkdir()
    src = pd.read_csv(H200 / "llama3_8b" / "requests_conv-0.8-a.csv")
    pd.DataFrame({"arrival_s": src["arrival_s"], "prompt_tokens": src["prompt_tokens"],
                  "output_tokens": src["output_tokens"],
                  "ttft_s": src["first_token_s"] - src["arrival_s"],
                  "e2e_s": src["completion_s"] - src["arrival_s"]}).to_csv(
        folder / "requests.csv", index=False)
    (folder / "engine.json").write_text(json.dumps({
        "model": "llama3_8b", "device": "NVIDIA H200", "num_blocks": 1024, "block_size": 256,
        "max_batch_tokens": 2048}))
    return folder


def test_request_level_folder_of_another_engine_is_predicted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = other_engine(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "predict", "--engine",
                             "transformers_cudagraph_h200", str(folder))
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("| other | all |"))
    tpot = float(row.split("|")[3].split("/")[1])
    assert tpot < 15.0  # the preset predicts this engine's TPOT (measured: a few %)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda f: (f / "engine.json").write_text(json.dumps({"model": "llama3_8b",
                                                          "device": "NVIDIA H200"})),
     "no PagedAttentionCache.num_blocks (or num_blocks)"),
    (lambda f: (f / "engine.json").write_text("{not json"), "engine.json: not JSON"),
    (lambda f: pd.read_csv(f / "requests.csv").drop(columns=["e2e_s"]).to_csv(
        f / "requests.csv", index=False), "missing column(s) completion_s or e2e_s"),
    (lambda f: (f / "requests.csv").rename(f / "requests_my stream.csv"),
     "stream name 'my stream' is none of"),
    (lambda f: (f / "requests.csv").unlink(), "no requests_<stream>.csv"),
    (lambda f: (f / "engine.json").write_text(json.dumps({
        "model": "llama3_8b", "device": "NVIDIA T4", "num_blocks": 9, "block_size": 16,
        "max_batch_tokens": 64})), "no hardware profile: device 'NVIDIA T4'"),
])
def test_other_layouts_are_refused_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        edit: object, message: str) -> None:
    folder = other_engine(tmp_path)
    edit(folder)  # type: ignore[operator]
    code, _, err = run_cli(monkeypatch, capsys, "predict", "--engine",
                           "transformers_cudagraph_h200", str(folder))
    assert code == 2, err
    assert message in err
    assert "internal error" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow  # over 1 s of the quick subset's CPU (CONTRIBUTING.md)
def test_schedule_command_reports_every_step_equal(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "schedule", str(H200 / "qwen2_5_14b_call1"))
    assert code == 0, err
    assert "| qwen2_5_14b_call1 | conv-0.3-a | 1299 | 100.0% | 100.0% | 100.0% | 100.0% |" in out


def test_pair_verdict_rule() -> None:
    from simkv.validation.pairs import verdict

    assert verdict(-0.5, -0.4) == (True, True)  # within a quarter of -50%
    assert verdict(-0.5, -0.3) == (True, False)
    assert verdict(0.13, -0.16) == (False, False)  # the 160-block pair of issue 19


def test_pairs_predict_a_smaller_token_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A configuration pair from one stream: the variant's engine.json halves nothing but the
    token budget (2,048 -> 512). Its measurements are the base's (no device run here), so the
    measured change is 0; simkv's must show longer TTFTs (long prompts take 4x the steps)."""
    base, var = tmp_path / "base", tmp_path / "tb512"
    shutil.copytree(H200 / "qwen2_5_14b_call1", base)
    shutil.copytree(H200 / "qwen2_5_14b_call1", var)
    e = json.loads((var / "engine.json").read_text())
    e["PagedAttentionCache.max_batch_tokens"] = 512
    (var / "engine.json").write_text(json.dumps(e))
    code, out, err = run_cli(monkeypatch, capsys, "pairs", str(base), str(var), "--engine",
                             "transformers_cudagraph_h200", "--csv", str(tmp_path / "p.csv"))
    assert code == 0, err
    d = pd.read_csv(tmp_path / "p.csv").set_index("metric")
    assert (d["measured_change"] == 0).all()
    assert d.loc["ttft_p50", "predicted_change"] > 0.05
    assert "sign right" in out


def test_request_level_folder_scheduled_as_vllm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """engine.json "scheduler": "vllm": another engine's log predicted with simkv's vllm
    scheduler (its max_num_seqs), the preset's costs."""
    from simkv.config.store import compose
    from simkv.validation.campaign import load_run
    from simkv.validation.stepfit import predict_stream

    folder = other_engine(tmp_path)
    e = json.loads((folder / "engine.json").read_text())
    (folder / "engine.json").write_text(json.dumps({**e, "scheduler": "vllm", "max_num_seqs": 2}))
    code, out, err = run_cli(monkeypatch, capsys, "predict", "--engine",
                             "transformers_cudagraph_h200", str(folder))
    assert code == 0, err
    assert "| other | all |" in out
    engine = compose(["engine=transformers_cudagraph_h200"]).engine
    two = predict_stream(load_run(folder), "all", None, engine)
    (tmp_path / "t").mkdir()
    tf = predict_stream(load_run(other_engine(tmp_path / "t")), "all", None, engine)
    # two seats at most: requests queue behind each other
    assert two["ttft"].median() > 2 * tf["ttft"].median()


def test_runs_of_several_campaigns_are_named_by_campaign() -> None:
    """Two campaigns both hold a `llama3_8b` folder: one protocol over both must keep them
    apart (a leave-one-load-out split names its run), and one campaign keeps bare names."""
    from simkv.validation.campaign import find_runs_in

    a, b = VAL / "hf_h100_2026-12-07", VAL / "hf_h100_2026-12-07b"
    both = [r.name for r in find_runs_in([str(a), str(b)])]
    assert len(both) == len(set(both))
    assert {"hf_h100_2026-12-07/llama3_8b", "hf_h100_2026-12-07b/llama3_8b"} <= set(both)
    assert "llama3_8b" in [r.name for r in find_runs_in([str(b)])]
