"""``neuronscope diagnose`` on tiny random models: the verdict is recomputable from its evidence,
the influence sums from the two models' own attributions, and incompatible pairs are refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from neuronscope.data import load_faithun
from neuronscope.diagnose import DiagnoseConfig, check_compatible, diagnose
from neuronscope.errors import ModelError, NeuronscopeError


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """tiny-llama and a GD-unlearned copy of it (saved), plus a forget file of 40 shipped facts."""
    from neuronscope.models import clone_model, load_model
    from neuronscope.unlearning import UnlearningConfig, unlearn

    d = tmp_path_factory.mktemp("pair")
    items = load_faithun()[:40]
    (d / "forget.jsonl").write_text("".join(json.dumps(it.to_dict()) + "\n" for it in items))
    base = load_model("tiny-llama", seed=0)
    m = clone_model(base)
    unlearn(m, items[:8], items[8:16], UnlearningConfig(method="gd", lr=1e-2, max_steps=3, batch_size=4, threshold=0.0),
            progress=False)
    m.save(d / "gd")
    return d


def _cfg(pair, **kw) -> DiagnoseConfig:
    base = dict(base="tiny-llama", unlearned=str(pair / "gd"), forget=str(pair / "forget.jsonl"), protocol="cloze",
                known_delta=0.0, n_boot=200)
    base.update(kw)
    return DiagnoseConfig(**base)


def test_diagnose_verdict_and_evidence_are_recomputable(pair, tmp_path) -> None:
    from neuronscope.attribution import AttributionConfig, attribute
    from neuronscope.evaluation import known_facts
    from neuronscope.influence import influence_variation
    from neuronscope.models import load_model
    from neuronscope.verdict import Evidence, verdict

    out = tmp_path / "diag"
    s = diagnose(_cfg(pair), out, progress=False)
    base = load_model("tiny-llama", seed=0)
    items = load_faithun()[:40]
    kf = known_facts(base, items, "cloze", 0.0)
    known = [it for it in items if it.id in kf.known_ids()]
    assert s["protocol"] == "cloze" and s["splits"]["forget"] == len(known)
    assert s["known_facts"]["fraction"] == pytest.approx(len(known) / 40)
    # D̃± from the two models' own attributions on the known items (target logprob)
    qs, ans = [i.question for i in known], [i.answer for i in known]
    cfg = AttributionConfig(target="logprob")
    var = influence_variation(attribute(base, qs, ans, cfg), attribute(load_model(str(pair / "gd")), qs, ans, cfg))
    got = s["influence_top100_by_target"]["logprob"]["unlearned"]
    assert got["sum_top_d_minus"] == pytest.approx(var.top_m_sum("-", 100), rel=1e-5)
    assert got["sum_top_d_plus"] == pytest.approx(var.top_m_sum("+", 100), rel=1e-5)
    # the CI brackets the ratio's bootstrap distribution; the verdict follows from its own evidence
    ci = s["influence_ci"]["logprob"]["unlearned"]["minus_over_plus"]
    assert ci["low"] <= ci["high"]
    v = s["verdict"]["unlearned"]
    assert v["label"] in {"erased", "hidden", "inconclusive"}
    assert verdict(Evidence.from_dict(v["evidence"])).label == v["label"]
    on_disk = json.loads((out / "verdict.json").read_text())
    assert json.dumps(on_disk).count(v["label"]) >= 1
    html = (out / "report.html").read_text()
    assert html.index(v["label"]) < html.index("Table 1 layout")  # the report opens with the verdict
    # a finished diagnosis is not replaced without overwrite
    with pytest.raises(NeuronscopeError, match="finished run"):
        diagnose(_cfg(pair), out, progress=False)


def test_incompatible_pair_is_one_line(pair) -> None:
    from neuronscope.models import load_model

    with pytest.raises(ModelError, match="differs from the base model"):
        check_compatible(load_model("tiny-llama"), load_model("tiny-qwen2"))
    r = subprocess.run([sys.executable, "-m", "neuronscope.cli", "diagnose", "--base", "tiny-llama", "--unlearned",
                        "tiny-qwen2", "--forget", str(pair / "forget.jsonl"), "--out", str(pair / "bad")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "differs from the base model" in r.stderr
    assert not (pair / "bad").exists()


def test_base_that_knows_nothing_is_refused(pair, tmp_path) -> None:
    with pytest.raises(NeuronscopeError, match="nothing to diagnose"):
        diagnose(_cfg(pair, known_delta=50.0), tmp_path / "none", progress=False)
    assert not (tmp_path / "none").exists()
