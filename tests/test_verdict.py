"""The verdict rule (neuronscope.verdict) branch by branch on hand-built evidence, and its report section."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from neuronscope.attacks import AttackConfig, AttackResult, AttackRun
from neuronscope.attribution import NeuronAttribution
from neuronscope.errors import NeuronscopeError
from neuronscope.influence import InfluenceVariation, influence_ci
from neuronscope.lens import LogitLensResult
from neuronscope.plots import heatmap_figure, logit_lens_figure, uninformative_reason
from neuronscope.report import HTMLReport
from neuronscope.stats import wilson
from neuronscope.verdict import (
    CORR_STABLE,
    RECOVERY_HIDDEN,
    Evidence,
    collect_evidence,
    verdict,
    verdicts_html,
    write_verdicts,
)

N_LAYERS = 31  # 0 = embeddings, 1..30 blocks (SmolLM2)


def ratio(low: float, high: float, est: float | None = None, target: str = "logprob") -> dict:
    est = (low + high) / 2 if est is None else est
    return {"minus_over_plus": {"estimate": est, "low": low, "high": high, "confidence": 0.95},
            "n_items": 30, "top": 100, "meta": {"target": target}}


def lens(k_by_layer: dict[int, int] | None = None, n: int = 30, default: int = 15) -> dict:
    k = [default] * N_LAYERS
    for layer, v in (k_by_layer or {}).items():
        k[layer] = v
    return {"layers": list(range(N_LAYERS)), "k": k, "n": n}


def attack(max_fs: list[float], fs_before: list[float], p: float = 0.1) -> AttackResult:
    cfg = AttackConfig(kind="harmful", p=p, lrs=(1e-5,), seeds=tuple(range(len(max_fs))))
    runs = [AttackRun(seed=s, lr=1e-5, steps=[1, 2], fs=[b, m], fs_before=b)
            for s, (m, b) in enumerate(zip(max_fs, fs_before))]
    return AttackResult(cfg, runs, n_forget=30)


RECOVERED = attack([0.9, 0.85, 0.95], [0.3, 0.3, 0.3])  # recovered fraction 0.857, 0.786, 0.929
NOT_RECOVERED = attack([0.35, 0.4, 0.3], [0.3, 0.3, 0.3])  # 0.071, 0.143, 0.0
BASE_KNOWS = lens({x: 28 for x in range(20, 31)})  # base above chance in late layers
AT_CHANCE = lens()


def ev(**kw) -> Evidence:
    return collect_evidence("gd", fs_base=kw.pop("fs_base", 1.0), **kw)


# -- rule 1: behavioural recovery decides --------------------------------------------------------


def test_rule1_recovery_hidden_overrides_internal_erased_signals():
    v = verdict(ev(attacks=[RECOVERED], influence=ratio(0.5, 0.8), lens=AT_CHANCE, lens_base=BASE_KNOWS))
    assert v.label == "hidden" and v.rule.startswith("1")
    assert v.signals["influence"].vote == "erased" and v.signals["lens"].vote == "erased"
    rec = v.signals["recovery"].values["per_attack"][0]
    r = np.array([0.6 / 0.7, 0.55 / 0.7, 0.65 / 0.7])
    assert rec["mean"] == pytest.approx(r.mean()) and rec["sd"] == pytest.approx(r.std(ddof=1))
    assert v.reasons[0].startswith("recovery (primary) → hidden")


def test_recovery_threshold_uses_the_seed_spread():
    # recovered fractions 0.45, 0.75, 0.6: mean 0.6, sd 0.15 → mean − sd = 0.45 < 0.5 → not hidden
    a = attack([0.45, 0.75, 0.6], [0.0, 0.0, 0.0])
    v = verdict(ev(attacks=[a]))
    assert v.signals["recovery"].vote == "neutral"
    # same mean, no spread → 0.6 ≥ 0.5 → hidden
    b = attack([0.6, 0.6, 0.6], [0.0, 0.0, 0.0])
    assert verdict(ev(attacks=[b])).signals["recovery"].vote == "hidden"
    # exactly at the threshold counts (≥)
    c = attack([RECOVERY_HIDDEN] * 3, [0.0] * 3)
    assert verdict(ev(attacks=[c])).signals["recovery"].vote == "hidden"
    # one seed: no spread, and the reason says so
    d = verdict(ev(attacks=[attack([0.9], [0.2])]))
    assert d.signals["recovery"].vote == "hidden" and "1 seed" in d.signals["recovery"].reason


def test_recovery_needs_a_gap_and_a_base_fs():
    small_gap = attack([0.99, 0.99, 0.99], [0.95, 0.95, 0.95])
    assert verdict(ev(attacks=[small_gap])).signals["recovery"].vote == "neutral"
    assert verdict(ev(attacks=[RECOVERED], fs_base=None)).signals["recovery"].vote == "missing"


def test_recovery_any_p_hidden_all_p_erased():
    weak = attack([0.35, 0.3, 0.3], [0.3, 0.3, 0.3], p=0.1)
    strong = attack([0.9, 0.9, 0.9], [0.3, 0.3, 0.3], p=0.3)
    assert verdict(ev(attacks=[weak, strong])).signals["recovery"].vote == "hidden"
    assert verdict(ev(attacks=[weak])).signals["recovery"].vote == "erased"
    mid = attack([0.6, 0.6, 0.6], [0.3, 0.3, 0.3], p=0.3)  # 0.43: between thresholds
    assert verdict(ev(attacks=[weak, mid])).signals["recovery"].vote == "neutral"


# -- rule 2: disagreement ------------------------------------------------------------------------


def test_rule2_primary_signals_disagree():
    v = verdict(ev(influence=ratio(1.2, 1.6), lens=AT_CHANCE, lens_base=BASE_KNOWS))
    assert v.label == "inconclusive" and v.rule.startswith("2")
    assert "influence hidden" in v.rule and "lens erased" in v.rule


# -- rule 3: internal signs of hiding ------------------------------------------------------------


def test_rule3_influence_ratio_ci_above_one():
    v = verdict(ev(influence=ratio(1.05, 1.9)))
    assert v.label == "hidden" and v.rule.startswith("3")
    assert verdict(ev(influence=ratio(0.95, 1.9))).label == "inconclusive"  # CI contains 1


def test_rule3_lens_below_chance_in_late_layers_like_paper_fig4():
    # GD in paper Fig. 4: ≈ 0.2 at layers 18–27
    v = verdict(ev(lens=lens({x: 5 for x in range(18, 28)}), lens_base=BASE_KNOWS))
    assert v.label == "hidden" and v.rule.startswith("3")
    assert v.signals["lens"].values["below_chance"] == list(range(18, 28))
    assert "below chance at layers 18–27" in v.signals["lens"].reason


def test_lens_bonferroni_embeddings_and_base_below():
    n, k = 30, 21
    assert wilson(k, n).low > 0.5  # significant at 95 % for one layer ...
    assert wilson(k, n, 1 - 0.05 / 30).low < 0.5  # ... but not after Bonferroni over 30 layers
    assert verdict(ev(lens=lens({25: k}))).signals["lens"].vote == "neutral"
    assert verdict(ev(lens=lens({25: 29}))).signals["lens"].vote == "hidden"  # 29/30 survives
    # layer 0 (embeddings, same token for every item) is never tested
    assert verdict(ev(lens=lens({0: 0}), lens_base=BASE_KNOWS)).signals["lens"].vote == "erased"
    # below chance where the base model is below chance too: a token prior, not suppression
    base = lens({3: 2, **{x: 28 for x in range(20, 31)}})
    assert verdict(ev(lens=lens({3: 2}), lens_base=base)).signals["lens"].vote == "erased"
    assert verdict(ev(lens=lens({3: 2}), lens_base=BASE_KNOWS)).signals["lens"].vote == "hidden"
    # at chance everywhere but no base lens: cannot claim the probe would have seen the knowledge
    assert verdict(ev(lens=AT_CHANCE)).signals["lens"].vote == "neutral"
    assert verdict(ev(lens=AT_CHANCE, lens_base=AT_CHANCE)).signals["lens"].vote == "neutral"


# -- rule 4: erased ------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [
    dict(influence=ratio(0.4, 0.9), attacks=[NOT_RECOVERED]),
    dict(influence=ratio(0.4, 0.9), lens=AT_CHANCE, lens_base=BASE_KNOWS),
    dict(attacks=[NOT_RECOVERED], correlation={"pearson": 0.99, "spearman": 0.98}),
])
def test_rule4_two_erased_signals_one_primary(kw):
    v = verdict(ev(**kw))
    assert v.label == "erased" and v.rule.startswith("4")


# -- rule 5: inconclusive ------------------------------------------------------------------------


def test_rule5_too_little_or_no_evidence():
    one = verdict(ev(influence=ratio(0.4, 0.9)))
    assert one.label == "inconclusive" and "only influence says erased" in one.rule
    none = verdict(Evidence("npo"))
    assert none.label == "inconclusive" and "no evidence" in none.rule
    assert all(s.vote == "missing" for s in none.signals.values())
    corr_only = verdict(ev(correlation={"pearson": 0.5}))
    assert corr_only.label == "inconclusive" and "secondary" in corr_only.rule
    # an unstable attribution space blocks 'erased'
    blocked = verdict(ev(influence=ratio(0.4, 0.9), attacks=[NOT_RECOVERED], correlation={"pearson": 0.7}))
    assert blocked.label == "inconclusive"


def test_harmful_attack_asked_for_but_not_run_is_named():
    """An attack that could not run removes the recovery signal (same label as no attack) and
    the reason says which attack and why, so a firm verdict is not mistaken for one with R."""
    kw = dict(influence=ratio(0.4, 0.9), lens=AT_CHANCE, lens_base=BASE_KNOWS)
    plain = verdict(ev(**kw))
    asked = verdict(collect_evidence("gd", fs_base=1.0, attacks_not_run={"harmful-p0.3": "pool holds only 1 wrongly answered items"},
                                     **kw))
    assert asked.label == plain.label == "erased"
    r = asked.signals["recovery"]
    assert r.vote == "missing"
    assert r.reason == ("harmful attack asked for but not run (harmful-p0.3: pool holds only 1 wrongly answered "
                        "items): the verdict rests on the other signals")
    assert plain.signals["recovery"].reason == "harmful attack: not run"
    assert asked.to_dict()["evidence"]["attacks_not_run"] == {"harmful-p0.3": "pool holds only 1 wrongly answered items"}


def test_correlation_thresholds_and_undefined():
    assert verdict(ev(correlation={"pearson": CORR_STABLE})).signals["correlation"].vote == "erased"
    assert verdict(ev(correlation={"pearson": 0.93})).signals["correlation"].vote == "neutral"
    assert verdict(ev(correlation={"pearson": float("nan")})).signals["correlation"].vote == "neutral"


def test_prob_target_is_flagged_and_undefined_ratio_is_neutral():
    v = verdict(ev(influence=ratio(1.2, 1.5, target="prob")))
    assert "prefer target 'logprob'" in v.signals["influence"].reason
    u = verdict(ev(influence={"minus_over_plus": {"estimate": None, "low": None, "high": None}}))
    assert u.signals["influence"].vote == "neutral"


# -- evidence from the library's objects ---------------------------------------------------------


def test_collect_evidence_from_result_objects(tmp_path):
    rng = np.random.default_rng(0)
    diff = rng.normal(0.0, 1.0, (20, 4))
    diff[:, 3] = -np.abs(diff[:, 3])  # last layer: gold never wins
    lr = LogitLensResult(label="gd", layers=[0, 1, 2, 3], hooks=["h"] * 4, accuracy=(diff > 0).mean(0),
                         logit_diff=diff, ids=[str(i) for i in range(20)], gold_tokens=[1] * 20,
                         distractor_tokens=[2] * 20, distractors=["x"] * 20)
    g = torch.Generator().manual_seed(0)
    mx = {("q", 0): torch.rand(8, 50, generator=g)}
    mn = {("q", 0): -torch.rand(8, 50, generator=g)}
    before = NeuronAttribution(mx, mn, torch.ones(8), meta={"target": "logprob"})
    after = NeuronAttribution({k: v * 0.5 for k, v in mx.items()}, {k: v * 2 for k, v in mn.items()}, torch.ones(8),
                              meta={"target": "logprob"})
    ci = influence_ci(before, after, n_boot=200, top=10)
    e = collect_evidence("gd", influence=ci, lens=LogitLensResult.from_dict(lr.to_dict()), attacks=[RECOVERED.to_dict()],
                         fs_base=1.0, fs_unlearned=[True] * 9 + [False] * 21,
                         correlation={"kind": "attribution_correlation", "pearson": 0.8, "spearman": 0.7,
                                      "label_a": "a", "label_b": "b"})
    assert e.lens["k"] == [int(x) for x in (diff > 0).sum(0)] and e.lens["n"] == 20 and e.lens["k"][3] == 0
    assert e.fs_unlearned["k"] == 9 and e.fs_unlearned["n"] == 30
    assert e.influence["meta"]["target"] == "logprob"
    assert e.attacks[0]["max_fs"]["values"] == [0.9, 0.85, 0.95]
    v = verdict(e)
    assert v.signals["influence"].vote == "hidden"  # D̃− doubled, D̃+ halved: ratio 2 / 0.5 per neuron scale
    assert v.signals["lens"].vote == "hidden"  # layer 3: 0/20 is below chance even after Bonferroni
    # JSON roundtrip of the evidence gives the same verdict
    again = verdict(json.loads(json.dumps(e.to_dict())))
    assert again.to_dict() == v.to_dict()
    out = write_verdicts(tmp_path / "verdict.json", {"gd": v})
    assert json.loads(out.read_text())["verdicts"]["gd"]["label"] == v.label
    with pytest.raises(NeuronscopeError, match="unknown field"):
        Evidence.from_dict({"method": "x", "bogus": 1})
    with pytest.raises(NeuronscopeError, match="fs_base"):
        collect_evidence("x", fs_base=1.5)


# -- report --------------------------------------------------------------------------------------


def test_report_opens_with_verdicts_and_omits_empty_figures(tmp_path):
    vs = {"gd": verdict(ev(attacks=[RECOVERED])), "ssiuu": verdict(ev(influence=ratio(0.4, 0.9), attacks=[NOT_RECOVERED]))}
    r = HTMLReport("t")
    r.heading("Results")
    zero = InfluenceVariation({("q", 0): torch.zeros(4), ("up", 0): torch.zeros(4)},
                              {("q", 0): torch.zeros(4), ("up", 0): torch.zeros(4)})
    assert r.figure(heatmap_figure(zero), name="GD heatmap") is False
    live = InfluenceVariation({("q", 0): torch.tensor([0.0, 1.0, 2.0, 0.5])}, {("q", 0): torch.zeros(4)})
    assert r.figure(heatmap_figure(live)) is True
    r.opening(verdicts_html(vs))  # called last, rendered first
    page = r.render()
    body = page[page.index("<body>"):]
    assert body.index("Verdict: erased or hidden?") < body.index("Results")
    assert "Figure “GD heatmap” omitted: every value is 0" in page
    assert r.omitted == [("GD heatmap", "every value is 0")]
    frag = verdicts_html(vs)
    assert ">hidden<" in frag and ">erased<" in frag and "rule 1:" in frag and "0.86 ± 0.07" in frag


def test_uninformative_reason_cases():
    assert uninformative_reason(go.Figure(go.Heatmap(z=[[np.nan, np.nan]]))) == "no finite value to plot"
    assert uninformative_reason(go.Figure(go.Heatmap(z=[[0.3, 0.3], [0.3, 0.3]]))).startswith("every cell has the same value")
    assert uninformative_reason(go.Figure(go.Scatter(x=[1, 2, 3], y=[0.0, 0.0, 0.0]))) == "every value is 0"
    assert uninformative_reason(go.Figure(go.Scatter(x=[1, 2], y=[0.0, 0.1]))) is None
    # the chance line (hoverinfo skip) is ignored; the lens curve itself is information
    lr = LogitLensResult(label="m", layers=[0, 1], hooks=["a", "b"], accuracy=np.array([0.5, 0.7]),
                         logit_diff=np.zeros((0, 2)), ids=[], gold_tokens=[], distractor_tokens=[], distractors=[])
    assert uninformative_reason(logit_lens_figure({"m": lr})) is None
