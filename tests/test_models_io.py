"""Cloning and save_pretrained round trips of bridged models (SPEC §3)."""

from __future__ import annotations

import torch

from neuronscope.models import clone_model, hf_state_dict, load_model, plain_hf_model

IDS = torch.tensor([[5, 6, 7, 8]])


def test_clone_is_independent_and_equal(tiny_llama):
    c = clone_model(tiny_llama)
    with torch.no_grad():
        torch.testing.assert_close(c.bridge(IDS), tiny_llama.bridge(IDS), rtol=0, atol=0)
        c.linear("up", 0).weight.add_(0.5)
        assert (c.bridge(IDS) - tiny_llama.bridge(IDS)).abs().max() > 1e-3
    assert c.arch == tiny_llama.arch
    # A clone of a clone works too (the bridge wraps HF modules in place).
    clone_model(c)


def test_save_and_reload_by_path(tiny_qwen2, tmp_path):
    path = tiny_qwen2.save(tmp_path / "saved")
    back = load_model(str(path), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(back.bridge(IDS), tiny_qwen2.bridge(IDS), rtol=0, atol=0)
    assert not any("_original_component" in k for k in hf_state_dict(tiny_qwen2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]  # no temporary leftovers


def test_plain_hf_model_matches_bridge(tiny_llama):
    plain = plain_hf_model(tiny_llama)
    with torch.no_grad():
        torch.testing.assert_close(plain(IDS).logits, tiny_llama.bridge(IDS), rtol=1e-10, atol=1e-10)
