"""Bad input through the real command line: exit code 2, one ``error:`` line, nothing half-written.

Each case runs ``python -m neuronscope.cli ...`` (the same ``main()`` the ``neuronscope``
console script calls) in its own subprocess with ``HF_HUB_OFFLINE=1``; the cases run two at a
time (module fixture), so selecting one test still runs them all. For every case the test checks:

* exit code 2;
* stderr, as a terminal shows it (text overdrawn with ``\\r`` dropped) and without progress-bar
  lines, is exactly one line, starting with ``error:`` and naming the file / field / value;
* no ``Traceback``;
* no output file was written, declared output folders do not exist at all, and every file of
  the case directory (run folders included) is unchanged, bytes and mode.

Issue 14 added the cases below "round 2": ``--overwrite`` on a folder that is not a run, or on
a finished run with bad data or an unknown model (the old run stays byte-identical); seeds
beyond numpy's range; negative counts; NaN learning rates; absent devices; unknown dtypes;
corrupt run / model / attack configs; a read-only output file (content and mode kept); Alpaca
data that is too small or unreachable (no ``attack_config.json`` left behind); hub names for
``--data`` (``attribute`` resolves them as ``unlearn`` does); a run folder locked by a live
process (the message names its pid and host).

``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TIMEOUT = 900


@dataclass
class Case:
    argv: list[str]
    expect: list[str]  # substrings of the error line (file / field / value)
    outputs: list[str] = field(default_factory=list)  # paths (relative to the case dir) that must hold no file
    env: dict[str, str] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)  # paths that must not exist at all (not even an empty folder)


def _rec(**kw) -> str:
    return json.dumps(kw) + "\n"


GOOD = _rec(question="What is the capital of France?", answer="Paris", false_options=["Rome", "Berlin"])

CASES: dict[str, Case] = {
    "missing file": Case(
        ["attribute", "--model", "tiny-llama", "--data", "missing.jsonl", "--out", "out/a.safetensors"],
        ["missing.jsonl", "no such file"], ["out"],
    ),
    "malformed JSON line": Case(
        ["attribute", "--model", "tiny-llama", "--data", "malformed.jsonl", "--out", "out/a.safetensors"],
        ["malformed.jsonl", "line 2", "malformed JSON"], ["out"],
    ),
    "record without an answer": Case(
        ["attribute", "--model", "tiny-llama", "--data", "no_answer.jsonl", "--out", "out/a.safetensors"],
        ["no_answer.jsonl", "record 2", "field 'answer' is missing"], ["out"],
    ),
    "answer not among the options": Case(
        ["attribute", "--model", "tiny-llama", "--data", "not_among.jsonl", "--out", "out/a.safetensors"],
        ["not_among.jsonl", "record 1", "field 'options'", "does not contain the answer 'Paris'"], ["out"],
    ),
    "duplicate options": Case(
        ["attribute", "--model", "tiny-llama", "--data", "duplicate.jsonl", "--out", "out/a.safetensors"],
        ["duplicate.jsonl", "record 1", "field 'false_options'", "duplicate option 'Rome'"], ["out"],
    ),
    "empty data file": Case(
        ["attribute", "--model", "tiny-llama", "--data", "empty.jsonl", "--out", "out/a.safetensors"],
        ["empty.jsonl", "file is empty"], ["out"],
    ),
    "empty forget split": Case(
        ["attack", "--model", "tiny-llama", "--data", "empty_splits.json", "--out", "out"],
        ["empty_splits.json", "field 'forget' is empty"], ["out"],
    ),
    "split too small for retain": Case(
        ["unlearn", "--model", "tiny-llama", "--data", "three.jsonl", "--out", "out"],
        ["split 'retain' is empty", "0.1 of 3 items"], ["out"],
    ),
    "p that selects no item": Case(
        ["attack", "--model", "tiny-llama", "--p", "0", "--out", "out"],
        ["p=0.0", "fraction must be in (0, 1)"], ["out"],
    ),
    "unknown model while offline": Case(
        ["attribute", "--model", "no-such-org/no-such-model", "--data", "good.jsonl", "--out", "out/a.safetensors"],
        ["no-such-org/no-such-model", "cannot load model"], ["out"],
    ),
    "architecture without a module map": Case(
        ["attribute", "--model", "mamba", "--data", "good.jsonl", "--out", "out/a.safetensors"],
        ["MambaForCausalLM", "cannot map module types"], ["out"],
    ),
    "tokenizer does not match the model": Case(
        ["attribute", "--model", "mismatch", "--data", "good.jsonl", "--out", "out/a.safetensors"],
        ["mismatch", "tokenizer has 49152 tokens", "embedding has 100 rows"], ["out"],
    ),
    "sequence longer than the context": Case(
        ["attribute", "--model", "tiny-llama", "--data", "long.jsonl", "--out", "out/a.safetensors"],
        ["long.jsonl: record 1 (id 'long-1'): input of", "tokens is longer than the context of tiny-llama (512 tokens)"],
        ["out"],
    ),
    "zero learning rate": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "gd", "--lr", "0", "--out", "out"],
        ["--lr", "learning rates > 0", "[0.0]"], ["out"],
    ),
    "negative learning rate": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "gd", "--lr", "-1e-5", "--out", "out"],
        ["--lr", "learning rates > 0", "-1e-05"], ["out"],
    ),
    "negative lambda": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "ssiuu", "--lam", "-0.1", "--out", "out"],
        ["lam", "≥ 0", "-0.1"], ["out"],
    ),
    "unwritable output directory": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "gd", "--out", "a_file/run"],
        ["a_file/run", "cannot create output directory", "Not a directory"], [],
    ),
    "diverging loss": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "gd", "--lr", "1e30", "--threshold", "-1", "--max-steps", "4",
         "--checkpoint-every", "1", "--eval-splits", "forget", "--out", "out"],
        ["gd: loss is", "(lr 1e+30)", "last good checkpoint", "out/train/checkpoint"], [],
    ),
    "diagnose with a negative --known-delta": Case(
        ["diagnose", "--base", "tiny-llama", "--unlearned", "tiny-llama", "--forget", "forget",
         "--known-delta", "-1", "--out", "out"],
        ["--known-delta", "must be ≥ 0", "-1"], [], absent=["out"],
    ),
    "diagnose with p outside (0, 1]": Case(
        ["diagnose", "--base", "tiny-llama", "--unlearned", "tiny-llama", "--forget", "forget", "--attack", "harmful",
         "--p", "1.5", "--out", "out"],
        ["--p", "must be ≤ 1", "1.5"], [], absent=["out"],
    ),
    "demo into a finished run": Case(
        ["demo", "--model", "tiny-llama", "--quick", "--out", "finished-demo"],
        ["finished", "already holds a finished run", "--overwrite"], [],
    ),
    "unlearn into a finished run": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "gd", "--out", "finished"],
        ["finished", "already holds a finished run", "--overwrite"], [],
    ),
    # ---- issue 14, round 2
    "--overwrite on a folder that is not a run": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "gd", "--overwrite", "--out", "userdir"],
        ["userdir: folder is not empty and is not a neuronscope run", "nothing was changed"], [],
    ),
    "--overwrite a finished run with bad data": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "gd", "--overwrite", "--data", "malformed.jsonl", "--out", "finished"],
        ["malformed.jsonl", "line 2", "malformed JSON"], [],
    ),
    "--overwrite a finished run with an unknown model": Case(
        ["unlearn", "--model", "no-such-dir", "--method", "gd", "--overwrite", "--out", "finished"],
        ["no-such-dir", "cannot load model"], [],
    ),
    "seed beyond numpy's range": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "gd", "--seed", str(2**70), "--out", "out"],
        ["--seed", "0 .. 2**32-1", str(2**70)], [], absent=["out"],
    ),
    "negative --known-candidates": Case(
        ["unlearn", "--model", "tiny-llama", "--known-only", "--known-candidates", "-5", "--out", "out"],
        ["--known-candidates", "≥ 1", "-5"], [], absent=["out"],
    ),
    "NaN learning rate in a grid": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "gd", "--lr", "1e-5", "--lr", "nan", "--out", "out"],
        ["--lr", "finite", "nan"], [], absent=["out"],
    ),
    "absent device": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "gd", "--device", "cuda:99", "--out", "out"],
        ["--device cuda:99"], [], absent=["out"],
    ),
    "unknown device string": Case(
        ["attack", "--model", "tiny-llama", "--device", "tpu", "--out", "out"],
        ["--device", "expected cpu, cuda or cuda:N", "'tpu'"], [], absent=["out"],
    ),
    "integer dtype": Case(
        ["attribute", "--model", "tiny-llama", "--dtype", "int8", "--out", "out/a.safetensors"],
        ["--dtype", "float32, bfloat16, float16", "'int8'"], [], absent=["out"],
    ),
    "unknown dtype": Case(
        ["unlearn", "--model", "tiny-llama", "--dtype", "float99", "--out", "out"],
        ["--dtype", "'float99'"], [], absent=["out"],
    ),
    "negative --limit": Case(
        ["logit-lens", "--model", "tiny-llama", "--limit", "-1", "--out", "out"],
        ["--limit", "≥ 1", "-1"], [], absent=["out"],
    ),
    "corrupt run config": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "gd", "--config", "oldrun/config.json", "--out", "out"],
        ["oldrun/config.json", "invalid JSON"], [], absent=["out"],
    ),
    "corrupt config.json of a saved model": Case(
        ["attack", "--model", "broken_model", "--out", "out"],
        ["broken_model/config.json", "corrupt model config", "invalid JSON"], [], absent=["out"],
    ),
    "corrupt attack_config.json of an unfinished attack": Case(
        ["attack", "--model", "tiny-llama", "--out", "attack_run"],
        ["attack_run/attack_config.json", "corrupt attack config"], [],
    ),
    "read-only output file": Case(
        ["attribute", "--model", "tiny-llama", "--out", "readonly.safetensors"],
        ["readonly.safetensors", "read-only", "not replacing"], [],
    ),
    "benign attack with too few Alpaca items": Case(
        ["attack", "--model", "tiny-llama", "--kind", "benign", "--alpaca", "alpaca3.jsonl", "--n-alpaca", "10", "--out", "out"],
        ["alpaca3.jsonl", "n=10", "only 3"], [], absent=["out"],
    ),
    "benign attack with a hub name while offline": Case(
        ["attack", "--model", "tiny-llama", "--kind", "benign", "--alpaca", "no-such-org/alpaca", "--out", "out"],
        ["no-such-org/alpaca", "Hub"], [], absent=["out"],
    ),
    "unlearn with a hub name while offline": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "gd", "--data", "no-such-org/facts", "--out", "out"],
        ["no-such-org/facts", "Hub"], [], absent=["out"],
    ),
    "attribute with a hub name while offline (as unlearn)": Case(
        ["attribute", "--model", "tiny-llama", "--data", "no-such-org/facts", "--out", "out/a.safetensors"],
        ["no-such-org/facts", "Hub"], [], absent=["out"],
    ),
    "second writer into a locked run": Case(
        ["unlearn", "--model", "tiny-llama", "--method", "gd", "--out", "locked"],
        ["locked: locked by another neuronscope process", "command 'unlearn'"], [],
    ),
}


MODEL_DIRS = ("mamba", "mismatch")


def _make_inputs(d: Path) -> None:
    """The bad input files every case refers to (relative paths)."""
    (d / "malformed.jsonl").write_text(GOOD + '{"question": "Who wrote Hamlet?", "answer": \n')
    (d / "no_answer.jsonl").write_text(GOOD + _rec(question="Who wrote Hamlet?", false_options=["Dickens", "Tolstoy"]))
    (d / "not_among.jsonl").write_text(_rec(question="What is the capital of France?", answer="Paris",
                                            options=["Rome", "Berlin", "Madrid"]))
    (d / "duplicate.jsonl").write_text(_rec(question="What is the capital of France?", answer="Paris",
                                            false_options=["Rome", "Rome"]))
    (d / "empty.jsonl").write_text("")
    (d / "good.jsonl").write_text(GOOD)
    (d / "three.jsonl").write_text("".join(
        _rec(question=f"What is item {i}?", answer=f"A{i}", false_options=[f"B{i}", f"C{i}"]) for i in range(3)))
    (d / "long.jsonl").write_text(_rec(question="Please answer this question. " * 150, answer="Paris",
                                       false_options=["Rome", "Berlin"]))
    (d / "empty_splits.json").write_text(json.dumps({"seed": 0, "splits": {"forget": [], "retain": [], "test": []}}))
    (d / "a_file").write_text("a regular file, not a directory\n")
    fin = d / "finished"
    fin.mkdir()
    (fin / ".neuronscope-run").write_text('{"command": "unlearn", "version": "0.1.0", "created": "2026-01-01"}\n')
    (fin / "summary.json").write_text('{"done": true}\n')
    (fin / "config.json").write_text('{"model": "tiny-llama"}\n')
    (fin / "report.html").write_text("<html>finished</html>\n")
    fin_demo = d / "finished-demo"
    fin_demo.mkdir()
    (fin_demo / ".neuronscope-run").write_text('{"command": "demo", "version": "0.1.0", "created": "2026-01-01"}\n')
    (fin_demo / "summary.json").write_text('{"done": true}\n')
    (d / "oldrun").mkdir()
    (d / "oldrun" / "config.json").write_text('{"method": "gd", "lr": 1e-5,\n')  # truncated: corrupt
    (d / "userdir").mkdir()
    (d / "userdir" / "precious.txt").write_text("x\n")
    (d / "broken_model").mkdir()
    (d / "broken_model" / "config.json").write_text('{"model_type": "llama", ')
    att = d / "attack_run"
    att.mkdir()
    (att / ".neuronscope-run").write_text('{"command": "attack"}\n')
    (att / "attack_config.json").write_text("{oops")
    (att / "attack.json").write_text('{"runs": []}\n')
    ro = d / "readonly.safetensors"
    ro.write_bytes(b"precious attribution")
    ro.chmod(0o444)
    (d / "alpaca3.jsonl").write_text("".join(
        json.dumps({"instruction": f"Say {i}.", "input": "", "output": f"{i}"}) + "\n" for i in range(3)))
    locked = d / "locked"
    locked.mkdir()
    (locked / ".neuronscope-run").write_text('{"command": "unlearn"}\n')
    (locked / "train").mkdir()


def _make_models(d: Path) -> None:
    """A saved tiny GPT-2 (fused QKV: no module map) and a Llama whose vocabulary is smaller than the tokenizer."""
    import torch
    import transformers

    from neuronscope.models import default_tokenizer

    tok = default_tokenizer()
    torch.manual_seed(0)
    # Mamba: the bridge boots it, but it has no attention/MLP projections to map (GPT-2 maps now)
    mamba = transformers.MambaForCausalLM(transformers.MambaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, state_size=4,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    mamba.save_pretrained(d / "mamba")
    tok.save_pretrained(d / "mamba")
    small = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=2))
    small.save_pretrained(d / "mismatch")
    tok.save_pretrained(d / "mismatch")


def _command(case: Case) -> list[str]:
    return [sys.executable, "-m", "neuronscope.cli", *case.argv]


def _run(cmd: list[str], cwd: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra_env)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def _snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``d`` with its bytes and mode (the shared, symlinked model directories excluded)."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d)
        if rel.parts[0] not in MODEL_DIRS and p.is_file():
            out[str(rel)] = (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
    return out


def _case_dir(tmp_path_factory, name: str, inputs: Path, models: Path) -> Path:
    d = tmp_path_factory.mktemp(name)
    shutil.copytree(inputs, d, dirs_exist_ok=True)
    for m in MODEL_DIRS:
        (d / m).symlink_to(models / m, target_is_directory=True)
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    """Run the selected cases (two at a time), each in a private copy of the input directory.

    Only the cases of the collected tests run (``-k`` selects cases; each costs a subprocess).
    """
    selected = {it.callspec.params["name"] for it in request.session.items
                if getattr(it, "callspec", None) is not None and it.module is sys.modules[__name__]
                and "name" in it.callspec.params}
    cases = {name: c for name, c in CASES.items() if name in selected or name == "missing file"}
    inputs = tmp_path_factory.mktemp("cli_inputs")
    _make_inputs(inputs)
    models = tmp_path_factory.mktemp("cli_models")
    _make_models(models)
    dirs = {name: _case_dir(tmp_path_factory, f"case{i}", inputs, models) for i, name in enumerate(cases)}
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    lock = {"pid": holder.pid, "host": socket.gethostname(), "command": "unlearn", "started": "2026-01-01T00:00:00+00:00"}
    if "second writer into a locked run" in dirs:
        (dirs["second writer into a locked run"] / "locked" / ".neuronscope-lock").write_text(json.dumps(lock))
    before = {name: _snapshot(d) for name, d in dirs.items()}
    debug_dir = _case_dir(tmp_path_factory, "debug", inputs, models)
    jobs = {name: (_command(c), dirs[name], c.env) for name, c in cases.items()}
    jobs["--debug"] = ([sys.executable, "-m", "neuronscope.cli", "--debug", *CASES["missing file"].argv], debug_dir, {})
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(_run, *job) for name, job in jobs.items()}
            results = {name: f.result() for name, f in futures.items()}
    finally:
        holder.kill()
        holder.wait()
    return {"results": results, "dirs": dirs, "before": before, "holder": holder.pid}


_PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+\s*\[")


def _rendered_lines(stderr: str) -> list[str]:
    """stderr lines as a terminal shows them, progress bars left out.

    Within a line, text before the last carriage return is overdrawn; tqdm bars (which on a
    pipe may end up on lines of their own) are not messages.
    """
    lines = []
    for raw in stderr.split("\n"):
        shown = raw.rsplit("\r", 1)[-1].strip()
        if shown and not _PROGRESS_BAR.search(shown):
            lines.append(shown)
    return lines


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_error_line_and_exit_code_2(runs, name):
    case = CASES[name]
    r = runs["results"][name]
    d = runs["dirs"][name]
    detail = f"{name}: rc {r.returncode}\nstderr:\n{r.stderr[-3000:]}\nstdout:\n{r.stdout[-1000:]}"
    assert r.returncode == 2, detail
    assert "Traceback" not in r.stderr, detail
    lines = _rendered_lines(r.stderr)
    assert len(lines) == 1, detail
    line = lines[0]
    assert line.startswith("error: "), detail
    for s in case.expect:
        assert s in line, f"{s!r} not in {line!r}"
    # Nothing half-written: declared outputs hold no file, and no input changed.
    for rel in case.outputs:
        p = d / rel
        assert not (p.is_file() or (p.is_dir() and any(x.is_file() for x in p.rglob("*")))), f"{name}: wrote {p}"
    for rel in case.absent:
        assert not (d / rel).exists(), f"{name}: left {d / rel} behind"
    if name == "second writer into a locked run":
        assert f"pid {runs['holder']} on {socket.gethostname()}" in line, line
    after = _snapshot(d)
    if name == "diverging loss":
        # The run stops at the bad step; the last good checkpoint stays, no result or model is written.
        new = sorted(set(after) - set(runs["before"][name]))
        assert "out/train/checkpoint/state.pt" in new and "out/train/checkpoint/model.safetensors" in new, new
        assert not [k for k in new if k.endswith(("summary.json", "result.json", "history.json")) or "/model/" in k], new
        assert "out/.neuronscope-run" in new  # the run marker (issue 14): the checkpoint is resumable
        assert not [k for k in new if (Path(k).name.startswith(".") and k != "out/.neuronscope-run") or k.endswith(".tmp")], new
        after = {k: v for k, v in after.items() if k not in new}
    assert after == runs["before"][name], f"{name}: files changed: {sorted(set(after) ^ set(runs['before'][name]))}"


def test_console_script_runs_main():
    """``main()`` turns errors into one line; the console script must call it, not the Typer app."""
    root = Path(__file__).resolve().parents[1]
    scripts = (root / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("[", 1)[0]
    assert re.search(r'^neuronscope\s*=\s*"neuronscope\.cli:main"\s*$', scripts, re.M), scripts
    from neuronscope import cli

    assert "main()" in (root / "neuronscope" / "cli.py").read_text().split('if __name__ == "__main__":', 1)[1]
    assert callable(cli.main)


def test_debug_shows_the_traceback(runs):
    r = runs["results"]["--debug"]
    assert r.returncode != 0
    assert "Traceback (most recent call last)" in r.stderr
    assert "DataError" in r.stderr or "NeuronscopeError" in r.stderr
    assert "missing.jsonl: no such file" in r.stderr
