"""Logit lens (paper Fig. 4, SPEC §7) against the model's own logits and an independent computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neuronscope.data import QAItem
from neuronscope.lens import (
    LogitLensResult,
    choose_distractor,
    lens_figure,
    lens_logits,
    logit_lens,
    logit_lens_report,
    residual_hooks,
)
from neuronscope.models import load_model
from neuronscope.prompts import chat_prompt

ITEMS = [
    QAItem("paris", "What is the capital of France?", "Paris", ("Rome", "Madrid")),
    QAItem("berlin", "What is the capital of Germany?", "Berlin", ("Paris", "Rome")),
    QAItem("tokyo", "What is the capital of Japan?", "Tokyo", ("Lima", "Rome")),
    QAItem("us", "Which country is New York in?", "United States", ("United Kingdom", "Germany")),
]


def _first(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"][0]


def _rms_norm(x, w, eps):
    """Llama/Qwen2 RMSNorm written out (in float64; HF normalises in float32, hence ~1e-7 noise)."""
    return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_lens_matches_model_logits_and_independent_hidden_states(fixture, request):
    model = request.getfixturevalue(fixture)
    tok = model.tokenizer
    prompts = [chat_prompt(tok, it.question) for it in ITEMS]
    lens, logits = lens_logits(model, prompts)
    n = model.arch.n_layers
    assert lens.shape == (len(prompts), n + 1, model.hf_model.config.vocab_size)
    # Final layer = the model's own logits at the last prompt position (float64, exact-ish).
    torch.testing.assert_close(lens[:, -1], logits, rtol=0, atol=1e-10)
    # Independent computation: HF forward, one prompt at a time (no padding), hand-written RMSNorm.
    hf = model.hf_model
    cfg = hf.config
    params = dict(hf.named_parameters())
    w_norm = next(v for k, v in params.items() if k.startswith("model.norm") and k.endswith("weight"))
    w_u = next(v for k, v in params.items() if k.startswith("lm_head") and k.endswith("weight"))
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]])
            out = hf(ids, output_hidden_states=True)
            torch.testing.assert_close(lens[i, -1], out.logits[0, -1], rtol=0, atol=1e-10)
            for j in range(n):  # hidden_states[j]: embeddings (j = 0) and block outputs (un-normed)
                h = out.hidden_states[j][0, -1]
                # the HF model's own final norm and head on HF's hidden states: identical
                torch.testing.assert_close(lens[i, j], hf.lm_head(hf.model.norm(h)), rtol=0, atol=1e-10)
                # written-out RMSNorm and unembedding: equal up to HF's float32 normalisation
                ref = _rms_norm(h, w_norm, cfg.rms_norm_eps) @ w_u.T
                torch.testing.assert_close(lens[i, j], ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_residual_hooks_are_embed_and_block_outputs(tiny_llama):
    assert residual_hooks(tiny_llama) == ["hook_embed", "blocks.0.hook_out", "blocks.1.hook_out"]


def test_distractor_choice_is_seeded_and_avoids_shared_first_token(tiny_llama):
    tok = tiny_llama.tokenizer
    us = ITEMS[3]
    # "United Kingdom" starts with the same token as "United States": never chosen.
    for seed in range(10):
        opt, gold, dist = choose_distractor(tok, us, seed)
        assert opt == "Germany" and gold == _first(tok, "United States") and dist == _first(tok, "Germany")
    only_shared = QAItem("x", "Which country?", "United States", ("United Kingdom",))
    assert choose_distractor(tok, only_shared, 0) is None
    picks = {choose_distractor(tok, ITEMS[0], s)[0] for s in range(20)}
    assert picks == {"Rome", "Madrid"}  # random over the wrong options
    assert choose_distractor(tok, ITEMS[0], 3) == choose_distractor(tok, ITEMS[0], 3)


def test_accuracy_on_hand_example():
    """Embeddings carry a huge constant on coordinate 0 and the final norm keeps only that coordinate,

    so at every layer the normed residual is ≈ √d_model = 8 on coordinate 0 and 0 elsewhere; the
    logit of token t is then ``8 · W_U[t, 0]``. Gold/distractor rows are set by hand: items 1 and 3 favour the
    gold answer, item 2 the distractor, and item 4 cannot be scored (shared first token only).
    """
    model = load_model("tiny-llama", dtype=torch.float64, seed=1)
    tok = model.tokenizer
    items = [
        QAItem("a", "Capital of France?", "Paris", ("Rome",)),
        QAItem("b", "Capital of Germany?", "Germany", ("Madrid",)),
        QAItem("c", "Capital of Japan?", "Tokyo", ("Lima",)),
        QAItem("d", "Country of New York?", "United States", ("United Kingdom",)),
    ]
    params = dict(model.hf_model.named_parameters())
    emb = next(v for k, v in params.items() if k.startswith("model.embed_tokens") and k.endswith("weight"))
    w_norm = next(v for k, v in params.items() if k.startswith("model.norm") and k.endswith("weight"))
    w_u = next(v for k, v in params.items() if k.startswith("lm_head") and k.endswith("weight"))
    with torch.no_grad():
        emb[:, 0] = 1e6
        w_norm.zero_()
        w_norm[0] = 1.0
        w_u.zero_()
        for word, value in [("Paris", 2.0), ("Rome", 1.0), ("Germany", -1.0), ("Madrid", 3.0),
                            ("Tokyo", 0.5), ("Lima", -0.5)]:
            w_u[_first(tok, word), 0] = value
    res = logit_lens(model, items, seed=0, label="hand")
    assert res.skipped == ["d"]
    assert res.ids == ["a", "b", "c"]
    np.testing.assert_allclose(res.accuracy, [2 / 3] * 3)
    # logit differences are 8 · (W_U[gold, 0] − W_U[distractor, 0]): RMS of [1e6, ~0, ...] is 1e6/√64
    np.testing.assert_allclose(res.logit_diff, [[8.0] * 3, [-32.0] * 3, [8.0] * 3], rtol=1e-4)
    assert res.final_layer_max_abs_diff < 1e-10
    assert res.distractors == ["Rome", "Madrid", "Lima"]


def test_accuracy_matches_independent_count(tiny_llama):
    tok = tiny_llama.tokenizer
    res = logit_lens(tiny_llama, ITEMS, seed=5, batch_size=3)
    assert res.skipped == [] and len(res.layers) == tiny_llama.arch.n_layers + 1
    lens, _ = lens_logits(tiny_llama, [chat_prompt(tok, it.question) for it in ITEMS])
    expect = []
    for i, it in enumerate(ITEMS):
        opt, gold, dist = choose_distractor(tok, it, 5)
        expect.append((lens[i, :, gold] - lens[i, :, dist]).numpy())
    expect = np.array(expect)
    np.testing.assert_allclose(res.logit_diff, expect, rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.accuracy, (expect > 0).mean(0))
    assert res.final_layer_max_abs_diff < 1e-10


def test_result_roundtrip_report_and_plot(tiny_llama, tiny_qwen2, tmp_path):
    res = logit_lens(tiny_llama, ITEMS[:3], label="llama")
    d = res.to_dict()
    json.dumps(d)
    back = LogitLensResult.from_dict(d)
    np.testing.assert_allclose(back.accuracy, res.accuracy)
    np.testing.assert_allclose(back.logit_diff, res.logit_diff)
    loaded = LogitLensResult.load(res.save(tmp_path / "lens.json"))
    assert loaded.ids == res.ids and loaded.hooks == res.hooks
    paths = logit_lens_report({"llama": tiny_llama, "qwen2": tiny_qwen2}, ITEMS, tmp_path / "rep")
    payload = json.loads(paths["json"].read_text())
    assert set(payload["models"]) == {"llama", "qwen2"}
    assert payload["models"]["llama"]["accuracy"] == pytest.approx(
        [float(x) for x in logit_lens(tiny_llama, ITEMS).accuracy])
    html = paths["html"].read_text()
    assert "plotly" in html and "llama" in html and "qwen2" in html
    assert not [p for p in (tmp_path / "rep").iterdir() if p.name.startswith(".")]  # no temp files left
    fig = lens_figure({"llama": res, "other": back})
    names = [t.name for t in fig.data]
    assert any("chance" in n for n in names)
    chance = next(t for t in fig.data if "chance" in t.name)
    assert list(chance.y) == [0.5, 0.5]
    assert len(res.plot({"other": back}).data) == 3


def test_empty_items_raise(tiny_llama):
    from neuronscope.errors import NeuronscopeError

    with pytest.raises(NeuronscopeError, match="no items"):
        logit_lens(tiny_llama, [])
    with pytest.raises(NeuronscopeError, match="different first token"):
        logit_lens(tiny_llama, [QAItem("x", "Which country?", "United States", ("United Kingdom",))])


def test_cli_logit_lens(tmp_path):
    from typer.testing import CliRunner

    from neuronscope.cli import app

    data = tmp_path / "facts.jsonl"
    data.write_text("\n".join(json.dumps(it.to_dict()) for it in ITEMS) + "\n")
    out = tmp_path / "lens"
    r = CliRunner().invoke(app, ["logit-lens", "--model", "tiny-llama", "--model", "qwen=tiny-qwen2",
                                 "--data", str(data), "--out", str(out)])
    assert r.exit_code == 0, r.output
    payload = json.loads((out / "logit_lens.json").read_text())
    assert list(payload["models"]) == ["tiny-llama", "qwen"]
    ref = logit_lens(load_model("tiny-llama", seed=0), ITEMS)
    np.testing.assert_allclose(payload["models"]["tiny-llama"]["accuracy"], ref.accuracy)
    assert (out / "logit_lens.html").exists()
