"""`neuronscope attribute / influence / heatmap` on the tiny model (SPEC §12), via CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import neuronscope.plots
from neuronscope.attribution import AttributionConfig, NeuronAttribution, attribute, data_fingerprint
from neuronscope.cli import app
from neuronscope.errors import NeuronscopeError
from neuronscope.influence import InfluenceVariation, influence_variation
from neuronscope.models import clone_model, load_model

FACTS = [
    {"question": "What is the capital of France?", "answer": "Paris", "false_options": ["Rome", "Berlin"]},
    {"question": "Which country is Albert Einstein from?", "answer": "Germany", "false_options": ["Spain", "Japan"]},
    {"question": "Who painted the Mona Lisa?", "answer": "Leonardo da Vinci", "false_options": ["Picasso", "Monet"]},
    {"question": "Which planet is known as the Red Planet?", "answer": "Mars", "false_options": ["Venus", "Jupiter"]},
    {"question": "What is the largest ocean on Earth?", "answer": "the Pacific Ocean", "false_options": ["the Atlantic", "the Arctic"]},
]
QS = [f["question"] for f in FACTS]
AS = [f["answer"] for f in FACTS]

runner = CliRunner()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "facts.jsonl"
    path.write_text("".join(json.dumps(f) + "\n" for f in FACTS))
    return path


@pytest.fixture(scope="module")
def tiny32():
    """tiny-llama as the CLI loads it (float32, seed 0)."""
    return load_model("tiny-llama")


@pytest.fixture(scope="module")
def perturbed_dir(tiny32, tmp_path_factory):
    """A saved tiny-llama whose up/down projections of layer 1 and q of layer 0 are perturbed."""
    m = clone_model(tiny32)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key in (("up", 1), ("down", 1), ("q", 0)):
            w = m.linear(*key).weight
            w.add_(0.3 * torch.randn(w.shape, generator=gen))
    return m.save(tmp_path_factory.mktemp("models") / "tiny-perturbed")


def _ok(result):
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


def test_attribute_influence_heatmap_chain(tiny32, perturbed_dir, data_file, tmp_path, monkeypatch):
    a_path, b_path = tmp_path / "before.safetensors", tmp_path / "after.safetensors"
    out = _ok(runner.invoke(app, ["attribute", "--model", "tiny-llama", "--data", str(data_file), "--out", str(a_path),
                                  "--batch-size", "2"]))
    assert "5 samples, 14 modules" in out.output
    _ok(runner.invoke(app, ["attribute", "--model", str(perturbed_dir), "--data", str(data_file), "--out", str(b_path)]))

    a = NeuronAttribution.load(a_path)
    meta = a.meta
    assert meta["model"] == "tiny-llama" and meta["target"] == "prob" and meta["positions"] == "all"
    assert meta["data_fingerprint"] == data_fingerprint(QS, AS) and meta["n_samples"] == 5
    assert meta["data"] == str(data_file)
    # Same numbers as the library call (batching differs: 2 vs 8 per batch).
    ref = attribute(tiny32, QS, AS, AttributionConfig(), progress=False)
    assert a.keys == ref.keys == list(tiny32.arch.modules())
    # float32: different batch shapes round differently (tolerance relative to the module's max |A|).
    for k in ref.keys:
        torch.testing.assert_close(a.max[k], ref.max[k], rtol=1e-3, atol=1e-4 * float(ref.max[k].abs().max()))
        torch.testing.assert_close(a.min[k], ref.min[k], rtol=1e-3, atol=1e-4 * float(ref.min[k].abs().max()))

    inf_path = tmp_path / "influence.safetensors"
    out = _ok(runner.invoke(app, ["influence", "--before", str(a_path), "--after", str(b_path), "--out", str(inf_path)]))
    assert "top-100" in out.output
    var = InfluenceVariation.load(inf_path)
    expected = influence_variation(a, NeuronAttribution.load(b_path))
    for k in expected.keys:
        assert torch.equal(var.d_plus[k], expected.d_plus[k]) and torch.equal(var.d_minus[k], expected.d_minus[k])
        assert (var.d_plus[k] >= 0).all() and (var.d_minus[k] >= 0).all()
    # The perturbed modules changed; D̃ is not identically zero.
    assert var.d_plus[("up", 1)].sum() + var.d_minus[("up", 1)].sum() > 0

    # heatmap --influence draws without recomputing: loading a model or attributing would fail.
    figures = []
    real_save = neuronscope.plots.save_figure

    def capture(fig, path, **kw):
        figures.append(fig)
        return real_save(fig, path, **kw)

    def boom(*a, **k):
        raise AssertionError("heatmap --influence must not load a model or recompute attributions")

    monkeypatch.setattr(neuronscope.plots, "save_figure", capture)
    with monkeypatch.context() as mp:
        mp.setattr("neuronscope.models.load_model", boom)
        mp.setattr("neuronscope.attribution.attribute", boom)
        html = tmp_path / "from_file.html"
        _ok(runner.invoke(app, ["heatmap", "--influence", str(inf_path), "--out", str(html), "--top", "10"]))
    text = html.read_text()
    assert "<html>" in text and "plotly" in text and "positive D" in text and "negative D" in text
    grid_plus, types, layers = var.module_layer_map("+", top=10)
    z = np.array(figures[0].data[0].z, dtype=float)
    np.testing.assert_allclose(z, grid_plus)
    assert list(figures[0].data[0].y) == types == ["q", "k", "v", "o", "gate", "up", "down"] and list(layers) == [0, 1]

    # heatmap --before/--after --data recomputes both attributions: the same maps.
    html2 = tmp_path / "from_models.html"
    _ok(runner.invoke(app, ["heatmap", "--before", "tiny-llama", "--after", str(perturbed_dir), "--data", str(data_file),
                            "--out", str(html2), "--top", "10"]))
    assert html2.exists()
    for trace_file, trace_models in zip(figures[0].data, figures[1].data):
        np.testing.assert_allclose(np.array(trace_models.z, dtype=float), np.array(trace_file.z, dtype=float),
                                   rtol=1e-4, atol=1e-7)


def test_attribute_options_and_errors(tmp_path, data_file):
    out = tmp_path / "a.safetensors"
    _ok(runner.invoke(app, ["attribute", "--model", "tiny-llama", "--data", str(data_file), "--out", str(out),
                            "--target", "logprob", "--positions", "prompt"]))
    meta = json.loads((tmp_path / "a.safetensors.json").read_text())
    assert meta["target"] == "logprob" and meta["positions"] == "prompt"
    assert NeuronAttribution.load(out).target_value.max() < 0  # log-probabilities

    # Bad option: fails before loading anything, one clear message, nothing written.
    bad = tmp_path / "bad.safetensors"
    r = runner.invoke(app, ["attribute", "--model", "tiny-llama", "--data", str(data_file), "--out", str(bad), "--target", "loss"])
    assert r.exit_code != 0 and isinstance(r.exception, NeuronscopeError) and "target" in str(r.exception)
    r = runner.invoke(app, ["attribute", "--model", "tiny-llama", "--data", str(tmp_path / "nope.jsonl"), "--out", str(bad)])
    assert r.exit_code != 0 and isinstance(r.exception, NeuronscopeError) and "nope.jsonl" in str(r.exception)
    assert not bad.exists() and not (tmp_path / "bad.safetensors.json").exists()


def test_influence_rejects_incompatible_files(tiny_llama, tmp_path):
    a = attribute(tiny_llama, QS[:2], AS[:2], AttributionConfig(layers=(0,)), progress=False)
    b = attribute(tiny_llama, QS[2:4], AS[2:4], AttributionConfig(layers=(0,)), progress=False)
    c = attribute(tiny_llama, QS[:2], AS[:2], AttributionConfig(layers=(0,), target="logprob"), progress=False)
    pa, pb, pc = (x.save(tmp_path / f"{n}.safetensors") for x, n in ((a, "a"), (b, "b"), (c, "c")))
    out = tmp_path / "inf.safetensors"
    r = runner.invoke(app, ["influence", "--before", str(pa), "--after", str(pb), "--out", str(out)])
    assert isinstance(r.exception, NeuronscopeError) and "different data" in str(r.exception)
    r = runner.invoke(app, ["influence", "--before", str(pa), "--after", str(pc), "--out", str(out)])
    assert isinstance(r.exception, NeuronscopeError) and "target" in str(r.exception)
    r = runner.invoke(app, ["influence", "--before", str(pa), "--after", str(tmp_path / "missing.safetensors"), "--out", str(out)])
    assert isinstance(r.exception, NeuronscopeError) and "not found" in str(r.exception)
    assert not out.exists()


def test_heatmap_argument_errors(tmp_path):
    out = tmp_path / "h.html"
    r = runner.invoke(app, ["heatmap", "--out", str(out)])
    assert r.exit_code == 2 and "give --before and --after" in r.output
    r = runner.invoke(app, ["heatmap", "--out", str(out), "--before", "tiny-llama"])
    assert r.exit_code == 2 and "give --before and --after" in r.output
    r = runner.invoke(app, ["heatmap", "--out", str(out), "--influence", str(tmp_path / "x.safetensors"), "--before", "tiny-llama"])
    assert r.exit_code == 2 and "not both" in r.output
    r = runner.invoke(app, ["heatmap", "--out", str(out), "--influence", str(tmp_path / "x.safetensors")])
    assert isinstance(r.exception, NeuronscopeError) and "x.safetensors: influence file not found" in str(r.exception)
    assert not out.exists()
