"""``study`` / ``demo`` and ``diagnose`` across 2 gloo processes (issue 15, SPEC §15) against one process.

Both processes run the same study into the same run folder (as under ``accelerate launch``):
unlearning, attribution and the attacks are sharded, evaluation replicated, and only process 0
writes. The one-process reference runs the same configuration in another folder. Tiny random
Llama in float64, so the only differences are the order of floating-point sums.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from factories import run_two_processes
from neuronscope import distributed


def _study_config():
    from neuronscope.study import StudyConfig, deep_merge

    small = {"dtype": "float64", "data": {"known_candidates": 40, "known_delta": 0.0, "forget": 0.2, "test": 0.5},
             "unlearning": {"max_epochs": 2, "batch_size": 4},
             "methods": {"gd": {"lr": 1e-3}, "ssiuu": {"lr": 1e-3, "lam": 10.0}},
             "evaluation": {"test_limit": 10, "utility_limit": 6},
             "attacks": {"harmful": {"epochs": 1, "seeds": [0, 1], "batch_size": 4}}}
    return StudyConfig.demo(model="tiny-llama", quick=True).merged(deep_merge(small, {}))


def _diagnose_config(study_dir: Path):
    from neuronscope.diagnose import DiagnoseConfig

    return DiagnoseConfig(base="tiny-llama", unlearned=str(study_dir / "models" / "ssiuu"),
                          forget=str(study_dir / "splits.json"), protocol="cloze", known_delta=0.0, n_boot=200,
                          attack=True, seeds=[0, 1], epochs=1, batch_size=4, dtype="float64")


def _worker(rank: int, o: Path) -> None:
    from neuronscope.diagnose import diagnose
    from neuronscope.study import run_study

    s = run_study(_study_config(), o / "study", progress=False, command="demo")
    d = diagnose(_diagnose_config(o / "study"), o / "diag", progress=False)
    (o / f"rank{rank}.json").write_text(json.dumps({"study": s, "diagnose": d}, default=str))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The 2-process runs (process 0 here, process 1 spawned) and the one-process references."""
    from neuronscope.diagnose import diagnose
    from neuronscope.study import run_study

    out = tmp_path_factory.mktemp("ddp_study")
    run_two_processes(_worker, out)
    assert not distributed.active()
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    ref_study = run_study(_study_config(), out / "ref_study", progress=False, command="demo")
    # the same unlearned checkpoint (the 2-process run's SSIUU model), diagnosed in one process
    ref_diag = diagnose(_diagnose_config(out / "study"), out / "ref_diag", progress=False)
    return {"out": out, "ranks": ranks, "ref": {"study": ref_study, "diagnose": ref_diag}}


_REF = re.compile(r"/ref_(?=study|diag)")

#: Wall-clock fields, which differ between any two runs.
_TIMES = ("seconds", "seconds_per_step")

#: Largest relative difference seen by :func:`_close` (printed by the tests, for the record).
WORST = {"rel": 0.0}


def _close(a, b, rel: float, path: str = "") -> None:
    """Recursive comparison: numbers within ``rel`` of their size, everything else equal."""
    if isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(set(a) ^ set(b))}"
        bounds = {"low", "high"} <= set(a) and all(isinstance(a[k], float) for k in ("low", "high"))
        for k in a:
            if k in _TIMES:
                continue
            if bounds and k in ("low", "high"):
                # Bootstrap bounds are order statistics of the resamples: a difference in the 7th
                # digit of the data can move them to a neighbouring resample value, so they are
                # compared on the scale of the interval (1e-4 of its width), not digit by digit.
                width = abs(b["high"] - b["low"])
                assert abs(a[k] - b[k]) <= rel * max(abs(a[k]), abs(b[k])) + 1e-4 * width, f"{path}.{k}: {a[k]!r} vs {b[k]!r}"
            else:
                _close(a[k], b[k], rel, f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: lengths {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, rel, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)):
        WORST["rel"] = max(WORST["rel"], abs(a - b) / max(abs(a), abs(b), 1e-12))
        assert abs(a - b) <= rel * max(abs(a), abs(b), 1e-12), f"{path}: {a!r} vs {b!r}"
    elif isinstance(a, str) and isinstance(b, str):  # paths inside the two run folders
        assert _REF.sub("/", a) == _REF.sub("/", b), f"{path}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


#: Parts of the summary compared (timings, file paths and the report differ by construction).
_PARTS = ("protocol", "known_facts", "splits", "accuracy", "influence_top100_by_target", "influence_ci", "attacks",
          "attack_comparisons", "attribution_correlation", "logit_lens", "answer_probability")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["study", "diagnose"])
def test_two_process_study_matches_one(runs, kind) -> None:
    """Same splits, accuracies (with intervals), D̃± sums and bootstrap CIs, lens, attacks and verdicts."""
    got, ref = runs["ranks"][0][kind], runs["ref"][kind]
    WORST["rel"] = 0.0
    # 1e-5: the trained weights agree to ~1e-7 of the largest weight (Adam divides by √v, which
    # magnifies the float64 rounding of the differently ordered sums for near-zero gradients), and
    # D̃− is a difference of two attributions, which magnifies it again (measured up to 2.2e-6).
    for part in _PARTS:
        _close(got[part], ref[part], 1e-5, part)
    print(f"{kind}: largest relative difference 2 processes vs 1: {WORST['rel']:.3g}")
    assert {m: v["label"] for m, v in got["verdict"].items()} == {m: v["label"] for m, v in ref["verdict"].items()}
    for m, u in ref["unlearning"].items():
        assert (got["unlearning"][m]["steps"], got["unlearning"][m]["reached"]) == (u["steps"], u["reached"])
    # the process that does not write returns the same results
    for part in _PARTS:
        _close(runs["ranks"][1][kind][part], got[part], 0.0, part)


@pytest.mark.slow
def test_two_process_study_writes_one_complete_folder(runs) -> None:
    """Process 0 alone writes: the folder holds every output once, the same files as one process, no leftovers."""
    out = runs["out"]
    for kind, ref in (("study", "ref_study"), ("diag", "ref_diag")):
        files = sorted(str(p.relative_to(out / kind)) for p in (out / kind).rglob("*") if p.is_file())
        want = sorted(str(p.relative_to(out / ref)) for p in (out / ref).rglob("*") if p.is_file())
        assert files == want
        assert not any(Path(f).name.startswith(".") and Path(f).name.endswith(".tmp") for f in files)
        summary = json.loads((out / kind / "summary.json").read_text())
        assert summary["verdict"] == runs["ranks"][0]["study" if kind == "study" else "diagnose"]["verdict"]
    # the saved SSIUU model is the one both processes trained: weights within 1e-5 of the largest
    # weight (measured 7.2e-7 after 2 epochs; the module test_distributed checks 4 steps at 1e-6)
    from safetensors.torch import load_file

    a = load_file(next((out / "study" / "models" / "ssiuu").glob("*.safetensors")))
    b = load_file(next((out / "ref_study" / "models" / "ssiuu").glob("*.safetensors")))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0.0, atol=1e-5 * float(b[k].abs().max()))


def test_non_data_parallel_method_is_refused_before_any_work(monkeypatch, tmp_path) -> None:
    """Under several processes a study with NPO stops with one line before it writes anything."""
    from neuronscope.errors import ConfigError
    from neuronscope.study import Study, StudyConfig

    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "is_main", lambda: True)
    cfg = StudyConfig.demo(model="tiny-llama", quick=True).merged({"methods": {"gd": {}, "npo": {}}})
    with pytest.raises(ConfigError, match="method: npo does not run data-parallel"):
        Study(cfg, tmp_path / "run", progress=False).run()
    assert not (tmp_path / "run").exists()
