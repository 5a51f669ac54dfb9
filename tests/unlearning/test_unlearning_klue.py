"""KLUE (our documented reading): superficial-knowledge-regularised FFN localisation and masked GD."""

from __future__ import annotations

import pytest
import torch

from neuronscope.attribution import AttributionConfig, attribute
from neuronscope.unlearning import UnlearningConfig, unlearn
from neuronscope.unlearning.klue import KLUE, knowledge_scores, localize, superficial_questions


def test_localize_takes_the_global_top_fraction_by_hand():
    scores = {("gate", 0): torch.tensor([1.0, 5.0, 3.0]), ("down", 0): torch.tensor([4.0, 2.0])}
    masks = localize(scores, 0.4)  # round(0.4 · 5) = 2 neurons: 5.0 (gate 1) and 4.0 (down 0)
    assert masks[("gate", 0)].tolist() == [False, True, False]
    assert masks[("down", 0)].tolist() == [True, False]
    assert sum(int(m.sum()) for m in localize(scores, 0.01).values()) == 1  # at least one


def test_superficial_questions_are_seeded_and_never_share_the_answer(forget, retain):
    pool = [*forget, *retain]
    qs = superficial_questions(forget, pool, 5, seed=0)
    assert qs == superficial_questions(forget, pool, 5, seed=0)
    assert qs != superficial_questions(forget, pool, 5, seed=1)
    by_q = {p.question: p for p in pool}
    for it, q5 in zip(forget, qs):
        assert len(q5) == 5
        assert all(by_q[q].answer != it.answer and by_q[q].id != it.id for q in q5)


def test_knowledge_scores_are_attribution_minus_alpha_superficial(tiny, forget, retain):
    pool = [*forget, *retain]
    ks = knowledge_scores(tiny, forget[:2], pool, alpha=10.0, n=2, seed=0)
    cfg = AttributionConfig(module_types=("gate", "up", "down"))
    main = attribute(tiny, [i.question for i in forget[:2]], [i.answer for i in forget[:2]], cfg, progress=False)
    sq = superficial_questions(forget[:2], pool, 2, seed=0)
    sup = attribute(tiny, [q for qs in sq for q in qs], [i.answer for i, qs in zip(forget[:2], sq) for _ in qs], cfg, progress=False)
    assert set(ks) == {(t, layer) for layer in range(2) for t in ("gate", "up", "down")}
    for k, v in ks.items():
        expected = main.max[k].mean(0) - 10.0 * sup.max[k].mean(0)
        assert torch.allclose(v, expected, rtol=1e-9, atol=1e-30)
        assert v.shape == (tiny.arch.n_neurons(k[0]),)


def test_klue_updates_only_localised_ffn_rows(tiny, forget, retain):
    cfg = UnlearningConfig(method="klue", lr=1e-3, batch_size=5, max_epochs=1, threshold=-1.0, klue_fraction=0.1,
                           klue_unforgotten=False, klue_n=1)
    k = KLUE(cfg)
    k.setup(tiny, {0: forget}, retain)  # localisation is deterministic: unlearn() finds the same rows
    masks = {id(tiny.linear(t, layer).weight): m for (t, layer), m in k.masks.items()}
    params = list(tiny.hf_model.parameters())
    before = [p.detach().clone() for p in params]
    res = unlearn(tiny, forget, retain, cfg, progress=False)
    assert res.steps == 1
    changed_rows = 0
    for p, b in zip(params, before):
        rows = (p.detach() != b).reshape(p.shape[0], -1).any(dim=1) if p.dim() == 2 else (p.detach() != b).any().reshape(1)
        if id(p) not in masks:
            assert not rows.any(), "a parameter outside the FFN weights changed"
            continue
        assert not (rows & ~masks[id(p)]).any(), "an unselected row changed"
        changed_rows += int(rows.sum())
    n_selected = sum(int(m.sum()) for m in k.masks.values())
    assert n_selected == round(0.1 * sum(int(m.numel()) for m in k.masks.values()))
    assert changed_rows == n_selected


def test_klue_trains_only_on_unforgotten_items(tiny, forget, retain, monkeypatch):
    seen = []
    orig = KLUE.loss

    def spy(self, model, f, r, key):
        seen.append([it.id for it in f])
        return orig(self, model, f, r, key)

    monkeypatch.setattr(KLUE, "loss", spy)
    from neuronscope.evaluation import mcqa_evaluate

    correct = mcqa_evaluate(tiny, forget).correct_ids()
    cfg = UnlearningConfig(method="klue", lr=1e-6, batch_size=5, max_epochs=1, threshold=-1.0, klue_n=1)
    unlearn(tiny, forget, retain, cfg, progress=False)
    assert len(seen) == (1 if correct else 0)
    if correct:
        assert set(seen[0]) == correct
    assert KLUE(cfg).select_forget(forget, {"f1"}) == [forget[1]]
    assert KLUE(cfg.replace(klue_unforgotten=False)).select_forget(forget, {"f1"}) == forget


@pytest.mark.parametrize("fraction", [0.05, 0.5])
def test_klue_mask_size(tiny, forget, retain, fraction):
    k = KLUE(UnlearningConfig(method="klue", klue_fraction=fraction, klue_n=1))
    k.setup(tiny, {0: forget[:2]}, retain)
    n_total = sum(int(m.numel()) for m in k.masks.values())
    assert sum(int(m.sum()) for m in k.masks.values()) == round(fraction * n_total)
    assert {id(w) for w in k.trainable(tiny)} <= {id(tiny.linear(t, l).weight) for l in range(2) for t in ("gate", "up", "down")}
