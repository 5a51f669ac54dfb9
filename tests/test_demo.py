"""``neuronscope demo`` (the study runner's demo preset) end to end on the tiny random Llama.

Checks the summary against independent recomputation from the files the demo wrote: the
influence sums from the saved attributions (Eq. 4–5 by hand), the base model's forget accuracy
by re-scoring the forget split, and resumption from the stage cache.
"""

from __future__ import annotations

import json

import pytest
import torch

from neuronscope.attribution import NeuronAttribution
from neuronscope.errors import NeuronscopeError
from neuronscope.study import StudyConfig, run_study


def _config(**over) -> StudyConfig:
    """The demo preset at test sizes (the same sizes the pre-study demo tests used)."""
    small = {"data": {"known_candidates": 40, "known_delta": 0.0}, "unlearning": {"max_epochs": 2},
             "methods": {"gd": {"lr": 1e-3}, "ssiuu": {"lr": 1e-3, "lam": 1e-3}},
             "evaluation": {"test_limit": 10, "utility_limit": 6}, "attacks": {"harmful": {"epochs": 1}}}
    from neuronscope.study import deep_merge

    return StudyConfig.demo(model="tiny-llama", quick=True).merged(deep_merge(small, over))


def run_demo(cfg: StudyConfig, out, **kw) -> dict:
    summary = run_study(cfg, out, **kw)
    return {"report": out / "report.html", "summary": out / "summary.json", "summary_data": summary}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    res = run_demo(_config(), out, progress=False)
    return out, res


def _top_sum(x: torch.Tensor, m: int) -> float:
    return float(torch.sort(x.flatten(), descending=True).values[:m].sum())


def test_demo_writes_report_summary_and_table(demo_run) -> None:
    out, res = demo_run
    summary = json.loads((out / "summary.json").read_text())
    assert res["report"].exists() and res["summary"].exists()
    html = res["report"].read_text()
    for heading in ("Table 1 layout", "Fig. 3", "Fig. 5", "Logit lens", "relearning attack", "target logprob"):
        assert heading in html
    assert set(summary["accuracy"]) == {"default", "gd", "ssiuu"}
    assert set(summary["influence_top100_by_target"]) == {"prob", "logprob"}
    assert summary["attribution_target"] == "prob"
    assert summary["influence_top100"] == summary["influence_top100_by_target"]["prob"]
    for suffix in ("csv", "md", "html"):
        assert (out / f"table.{suffix}").exists()
    assert summary["timings_s"]["total"] > 0
    assert json.loads((out / "study.json").read_text())["attribution"]["targets"] == ["prob", "logprob"]


@pytest.mark.parametrize("target,suffix", [("prob", ""), ("logprob", ".logprob")])
def test_demo_influence_matches_saved_attributions(demo_run, target: str, suffix: str) -> None:
    """Σ top-100 D̃± recomputed by hand (Eq. 4–5, App. A clipping) from the saved attribution files."""
    out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    before = NeuronAttribution.load(out / "attributions" / f"default{suffix}.safetensors")
    assert before.meta["config"]["target"] == target
    for method in ("gd", "ssiuu"):
        after = NeuronAttribution.load(out / "attributions" / f"{method}{suffix}.safetensors")
        # SPEC §6: D+ = mean_i[max A_θ − max(max A_θ', 0)], D− = mean_i[min A_θ − min A_θ'], clipped after the mean
        d_plus = torch.cat([(before.max[k] - after.max[k].clamp(min=0)).mean(0).clamp(min=0) for k in before.max])
        d_minus = torch.cat([(before.min[k] - after.min[k]).mean(0).clamp(min=0) for k in before.min])
        got = summary["influence_top100_by_target"][target][method.upper()]
        assert got["sum_top_d_plus"] == pytest.approx(_top_sum(d_plus, 100), rel=1e-5, abs=1e-12)
        assert got["sum_top_d_minus"] == pytest.approx(_top_sum(d_minus, 100), rel=1e-5, abs=1e-12)


def test_demo_base_forget_accuracy_is_recomputable(demo_run) -> None:
    """The reported base FS equals re-scoring the forget split with the (seeded) base model."""
    from neuronscope.data import load_faithun, split_faithun
    from neuronscope.evaluation import knowledge_evaluate
    from neuronscope.models import load_model

    out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    known = json.loads((out / "stages" / "splits.json").read_text())["value"]["known"]
    items = load_faithun()[:60]
    splits = split_faithun(items, seed=0, forget_pool=set(known["correct_ids"]) if len(known["correct_ids"]) >= 3 else None)
    base = load_model("tiny-llama", seed=0)
    res = knowledge_evaluate(base, splits.forget, protocol="cloze")
    got = summary["accuracy"]["default"]["forget"]
    assert summary["protocol"] == "cloze"
    assert got["value"] == pytest.approx(res.accuracy) and got["k"] == sum(res.correct) and got["n"] == len(res.correct)
    from scipy.stats import binomtest

    ci = binomtest(got["k"], got["n"]).proportion_ci(method="wilson")
    assert (got["low"], got["high"]) == pytest.approx((ci.low, ci.high))
    assert summary["splits"]["forget"] == len(splits.forget)


def test_demo_refuses_a_finished_run_and_resumes_stages(demo_run, tmp_path) -> None:
    out, _ = demo_run
    with pytest.raises(NeuronscopeError, match="finished run"):
        run_demo(_config(), out, progress=False)
    # a run whose summary is gone resumes from the cached stages and reproduces the summary
    import shutil

    copy = tmp_path / "resumed"
    shutil.copytree(out, copy)
    first = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").unlink()
    again = run_demo(_config(), copy, progress=False)["summary_data"]
    assert again["accuracy"] == first["accuracy"]
    assert again["influence_top100_by_target"] == first["influence_top100_by_target"]  # reloaded from the saved files
    # resumed stages skip unlearning: the cached unlearning stage is reused as-is
    assert again["unlearning"] == first["unlearning"]


def test_demo_rejects_unknown_target(tmp_path) -> None:
    with pytest.raises(NeuronscopeError, match="targets"):
        run_demo(_config(attribution={"targets": ["nats"]}), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_demo_reports_the_ssiuu_penalty_weight(demo_run) -> None:
    """mean λ·penalty in the summary = λ × the mean of the per-step penalties in the training history."""
    out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    hist = json.loads((out / "stages" / "unlearn_ssiuu.json").read_text())["value"]["history"]
    pens = [h["ssiuu_penalty"] for h in hist if h.get("ssiuu_penalty") is not None]
    assert pens, "SSIUU history records its penalty"
    assert summary["unlearning"]["ssiuu"]["mean_lambda_penalty"] == pytest.approx(1e-3 * sum(pens) / len(pens))
    assert "mean_lambda_penalty" not in summary["unlearning"]["gd"]


def test_demo_models_are_diagnosable_with_the_same_verdict(demo_run, tmp_path) -> None:
    """``diagnose`` on the demo's saved GD model, its forget split and its attack settings gives the demo's verdict."""
    from neuronscope.diagnose import DiagnoseConfig, diagnose

    out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    cfg = DiagnoseConfig(base="tiny-llama", unlearned=str(out / "models" / "gd"), forget=str(out / "splits.json"),
                         protocol="cloze", known_delta=0.0, attack=True, p=0.3, lrs=[1e-5], seeds=[0, 1, 2], epochs=1)
    s = diagnose(cfg, tmp_path / "diag", progress=False)
    assert s["splits"]["forget"] == summary["splits"]["forget"]
    assert s["verdict"]["unlearned"]["label"] == summary["verdict"]["gd"]["label"]
    assert (s["verdict"]["unlearned"]["evidence"]["influence"]["minus_over_plus"]
            == summary["verdict"]["gd"]["evidence"]["influence"]["minus_over_plus"])
