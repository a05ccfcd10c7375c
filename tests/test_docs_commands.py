"""Every command of README.md, CONTRIBUTING.md, docs/*.md and experiments/README.md runs as
written (issue 21): a newcomer copies them first.

How: each ```bash block is split into commands (``\\`` continuations joined, comments and
``&&`` split off). Every command must match one rule of RULES, in order; one that matches
none fails the test (a new command in the docs needs its rule). A rule either runs the
command or says why it cannot run here, and that reason is the test's output:

* run: as written, from a folder that mirrors the checkout (its top-level entries linked,
  ``../shared`` too), one folder per document so a command can use what the one before it
  wrote (``chats.parquet``, a sweep folder). Long runs are shrunk by overrides appended to
  the ``simkv`` command line (a later override wins): ``output.plot=false
  output.progress=false`` and a small workload (``workload.num_requests=40``,
  ``num_programs=3``, ``num_conversations=4``, ``num_sessions=4``, a trace's ``limit=150``:
  SHRINK). ``<time>`` (a sweep's folder, which the sweep prints) becomes the folder the last
  sweep of the document made. Files the docs expect the user to have downloaded come from the
  shared data (USER_FILES); ``calib/`` (what ``simkv-calibrate run`` measures on a GPU) is the
  committed H100 campaign.
* skip, with the reason: a GPU, an install (checked by hand from a fresh clone; an extra
  named must exist in pyproject.toml), a long job another test runs at a smaller size, or
  placeholders the user fills in.

Also: the README's lists of config-group choices are the registry's (``simkv --help``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "experiments" / "README.md"]
BIN = Path(sys.executable).parent
SHRINK = {"num_requests": 40, "num_programs": 3, "num_conversations": 4, "num_sessions": 4, "limit": 150}
# The user's downloads in the docs, and where the test takes a stand-in from.
USER_FILES = {
    "BurstGPT_1.csv": SHARED / "burstgpt" / "sample" / "BurstGPT_1_first33rows.csv",
    "AzureLLMInferenceTrace_conv.csv": SHARED / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv",
    "trace.jsonl": SHARED / "conversations" / "mooncake_fast25_conversation_trace.jsonl",
}
GPU = "needs a CUDA GPU (torch, triton; docs/CALIBRATION.md, docs/VALIDATION.md)"
INSTALL = "an install: checked by hand from a fresh clone (README's first line) and by CI's own"
QUICK = "full size takes minutes to hours; tests/test_experiments.py runs every experiment at --quick size"


@dataclass(frozen=True)
class Rule:
    pattern: str
    skip: str = ""  # why it cannot run here; empty: run it


RULES = [
    Rule(r"^pip install \./simkv-plugin-example$", "tests/test_plugins.py builds and installs the example package"),
    Rule(r"^(python3 -m venv|\. \.venv/bin/activate$)", INSTALL),
    Rule(r"^pip install (-e )?'?\.(\[|$)", INSTALL),  # the extras named must exist (test below)
    Rule(r"^simkv router=fewest_prompt_tokens", "the example plug-in of docs/PLUGINS.md (tests/test_plugins.py runs it)"),
    Rule(r"^\.venv-ray/", "Ray goes in a venv of its own (docs/SWEEPS.md: installed and measured by hand)"),
    Rule(r"^pytest\b", "the test suite itself: CI runs it (.ci/run)"),
    Rule(r"^ruff check"),
    Rule(r"^(simkv-calibrate run|torchrun|python -m simkv\.validation\.(hf_campaign|hf_replay))", GPU),
    Rule(r"^python -m simkv\.validation\.compare val/", "reads val/ from hf_replay on a GPU and writes docs/img"),
    Rule(r"^simkv-validate .*\b(FOLDER|BASE|VARIANT|val/)", "placeholders for the user's own campaign folders"),
    Rule(r"^simkv-validate protocol ", "every hold-out split of a campaign (65 s here); tests/test_holdout.py tests the protocol"),
    Rule(r"^jupyter lab ", "starts a server (checked below where the jupyter extra is installed)"),
    Rule(r"^python experiments/", QUICK),
    Rule(r"^python benchmarks/", "benchmarks run for minutes; docs/PERFORMANCE.md has their measurements"),
    Rule(r"workload\.path=ServeGen/", "needs the ServeGen repository's data, a download (docs/TRACE_FORMAT.md)"),
    Rule(r"^simkv-search spec\.yaml", "a search of many simulations; tests/test_search*.py run small specs"),
    Rule(r"^(simkv|simkv-trace|simkv-compare|simkv-validate|simkv-calibrate (fit|power-fit))( |$)"),
]


def commands(doc: Path) -> list[str]:
    out = []
    for lang, block in re.findall(r"```(\w*)\n(.*?)```", doc.read_text(), re.S):
        if lang not in ("bash", "sh", "shell"):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(re.sub(r";\s", " && ", line), comments=True)
            if not words:
                continue
            # The command as typed, without its comment; && separates commands.
            text = shlex.join(words).replace("'&&'", "&&")
            out += [c.strip() for c in text.split(" && ")]
    return out


CASES = [(doc, i, cmd) for doc in DOCS if doc.exists() for i, cmd in enumerate(commands(doc))]


def rule_for(cmd: str) -> Rule:
    for rule in RULES:
        if re.search(rule.pattern, cmd):
            return rule
    raise AssertionError(f"no rule for the documented command {cmd!r}: add one to RULES")


def test_every_documented_command_has_a_rule() -> None:
    assert len(CASES) > 80
    for _, _, cmd in CASES:
        rule_for(cmd)


def test_extras_named_in_the_docs_exist() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for doc, _, cmd in CASES:
        for name in re.findall(r"\.\[([\w,]+)\]", cmd):
            assert set(name.split(",")) <= set(extras), f"{doc.name}: {cmd}"
        assert "simkv[" not in cmd, f"{doc.name}: {cmd}: extras come from the checkout, '.[x]'"


@cache
def workload_size(name: str) -> list[str]:
    from simkv import registry
    from simkv.config.store import workload_presets

    known = {n: e.config_type for n, e in registry.entries("workload").items()}
    known.update({n: type(c) for n, c in workload_presets().items()})
    have = {f.name for f in fields(known[name])}
    return [f"workload.{k}={v}" for k, v in SHRINK.items() if k in have]


def shrink(words: list[str]) -> list[str]:
    if any(w in ("--help", "-h", "--version") for w in words[1:]):
        return words
    chosen = [w.split("=", 1)[1] for w in words if w.startswith("workload=")]
    names = chosen[0].split(",") if chosen else ["burstgpt"]
    size = workload_size(names[0]) if len(names) == 1 else []
    return [*words, "output.plot=false", "output.progress=false", *size]


@cache
def mirror(doc_name: str, tmp: Path) -> Path:
    """A folder that looks like the checkout (entries linked), with ../shared beside it."""
    home = tmp / doc_name.replace("/", "_") / "checkout"
    home.mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".venv", "simkv_runs") and not entry.name.startswith(".venv"):
            (home / entry.name).symlink_to(entry)
    if SHARED.is_dir():
        (home.parent / "shared").symlink_to(SHARED.parent)
    calib = ROOT / "hardware_profiles" / "calibration"
    first = sorted(p for p in calib.iterdir() if p.is_dir() and p.name.startswith("h100"))[0]
    (home / "calib").symlink_to(first)
    for name, source in USER_FILES.items():
        if source.is_file():
            shutil.copy(source, home / name)
    return home


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("docs")


@pytest.mark.slow
@pytest.mark.parametrize(("doc", "i", "cmd"), CASES,
                         ids=[f"{d.relative_to(ROOT)}:{i}:{c[:50]}" for d, i, c in CASES])
def test_a_documented_command_runs_as_written(doc: Path, i: int, cmd: str, tmp_root: Path) -> None:
    rule = rule_for(cmd)
    if rule.skip:
        pytest.skip(rule.skip)
    cwd = mirror(str(doc.relative_to(ROOT)), tmp_root)
    missing = [n for n in USER_FILES if re.search(rf"\b{re.escape(n)}\b", cmd) and not (cwd / n).exists()]
    if missing or ("../shared/" in cmd and not SHARED.is_dir()):
        pytest.skip(f"the shared data is not beside the checkout ({', '.join(missing) or '../shared'})")
    if "<time>" in cmd:
        sweeps = sorted((cwd / "simkv_runs" / "multirun").glob("*"))
        assert sweeps, f"{cmd}: no sweep ran before it in {doc.name}"
        cmd = cmd.replace("<time>", sweeps[-1].name)
    words = shlex.split(cmd)
    if words[0] == "simkv":
        words = shrink(words)
    exe = BIN / words[0]
    argv = [str(exe), *words[1:]] if exe.exists() else words
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, f"{doc.name}: {shlex.join(words)}\n{p.stderr[-3000:]}"
    assert "internal error" not in p.stderr


def test_the_figures_the_readme_shows_are_committed() -> None:
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    assert len(images) >= 3
    for img in images:
        path = ROOT / img
        assert path.is_file(), img
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", img


def _choice_lists(text: str) -> dict[str, set[str]]:
    """`group` (a, b, c: a note) in the README's paragraph on config groups."""
    start = text.index("Config groups (choose with `group=name`)")
    para = " ".join(text[start:text.index("\n\n", start)].split())
    return {g: {c.strip() for c in body.split(":")[0].split(",")}
            for g, body in re.findall(r"`(\w+)` \(([^)]*)\)", para)}


NOTES = {"scheduler": "docs/SCHEDULING.md", "kv_policy": "docs/KV_METHODS.md"}


def groups_paragraph() -> str:
    """The README's paragraph of groups: the default choice first (config.yaml), then the rest."""
    import yaml

    from simkv.config.store import SINGLE_CHOICE_GROUPS, choices

    defaults = {}
    for entry in yaml.safe_load((ROOT / "simkv" / "conf" / "config.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            defaults.update({k: v for k, v in entry.items() if not k.startswith("override")})
    parts = []
    for group in SINGLE_CHOICE_GROUPS:
        names = [c for c in choices(group) if not c.startswith("test_")]
        first = [defaults[group]] if defaults.get(group) in names else []
        listed = ", ".join(first + [n for n in names if n not in first])
        parts.append(f"`{group}` ({listed}{': ' + NOTES[group] if group in NOTES else ''})")
    return "Config groups (choose with `group=name`): " + ", ".join(parts) + "."


def test_the_readme_lists_every_group_with_the_registrys_choices() -> None:
    from simkv.config.store import SINGLE_CHOICE_GROUPS, choices

    listed = _choice_lists((ROOT / "README.md").read_text())
    for group in SINGLE_CHOICE_GROUPS:
        want = {c for c in choices(group) if not c.startswith("test_")}  # (tests' own workloads)
        assert listed.get(group) == want, (
            f"README's `{group}` list is stale; simkv --help lists: {', '.join(sorted(want))} "
            f"(python tests/test_docs_commands.py prints the paragraph)")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("jupyter-lab", path=str(BIN)) is None,
                    reason="the jupyter extra is not installed: pip install '.[jupyter]'")
def test_jupyter_lab_opens_the_quickstart(tmp_path: Path) -> None:
    """README: `jupyter lab notebooks/quickstart.ipynb` starts a server that serves it."""
    import time
    import urllib.request

    # (as root, as on this project's machines, Jupyter asks for --allow-root: the README says so)
    root = ["--allow-root"] if os.geteuid() == 0 else []
    p = subprocess.Popen([str(BIN / "jupyter-lab"), "notebooks/quickstart.ipynb", "--no-browser",
                          "--port=0", "--IdentityProvider.token=", f"--ServerApp.root_dir={ROOT}",
                          f"--ServerApp.runtime_dir={tmp_path}", *root],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)})
    try:
        url = None
        deadline = time.time() + 120
        while url is None and time.time() < deadline:
            line = p.stdout.readline()
            if not line and p.poll() is not None:
                break
            m = re.search(r"(http://(?:localhost|127\.0\.0\.1):\d+)/lab", line)
            # (localhost may resolve to ::1 while the server listens on 127.0.0.1)
            url = m.group(1).replace("localhost", "127.0.0.1") if m else None
        assert url, "jupyter lab did not say where it serves"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # (no proxy for loopback)
        with direct.open(f"{url}/api/contents/notebooks/quickstart.ipynb", timeout=30) as r:
            assert r.status == 200
    finally:
        p.terminate()
        p.wait(timeout=30)


if __name__ == "__main__":
    import textwrap

    print(textwrap.fill(groups_paragraph(), 96, break_on_hyphens=False, break_long_words=False))
