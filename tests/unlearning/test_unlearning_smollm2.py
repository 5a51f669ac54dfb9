"""SSIUU on the embedded SmolLM2 (slow): the tapped first-order ∂P/∂θ, exact and first-order steps."""

from __future__ import annotations

import math

import pytest
import torch

from neuronscope.models import clone_model
from neuronscope.unlearning import UnlearningConfig
from neuronscope.unlearning.losses import answer_logprobs, encode_items
from neuronscope.unlearning.ssiuu import SSIUU, attributed_weights
from neuronscope.unlearning.trainer import train_step

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol(smollm2):
    m = clone_model(smollm2)  # the session fixture must not be trained
    for p in m.hf_model.parameters():
        p.requires_grad_(True)
    return m


def test_tapped_gradient_equals_autograd_on_smollm2(smol, forget, retain):
    cfg = UnlearningConfig(method="ssiuu", ssiuu_grad="first_order", ssiuu_target="prob", lam=1e-3)
    m = SSIUU(cfg)
    loss, _ = m.loss(smol, forget[:2], retain[:1], 0)
    loss.backward()
    tapped = [g.clone() for g in m._fo["tap"].grads]
    m.after_backward(smol)
    smol.hf_model.zero_grad(set_to_none=True)
    ws = attributed_weights(smol, cfg.ssiuu_modules)
    lp = answer_logprobs(smol, encode_items(smol, forget[:2]))
    ref = torch.autograd.grad(lp.seq.exp().sum(), ws)
    for j in (0, 3, 6, len(ws) - 1):  # q of layer 0, o, down, and the last layer's down
        scale = float(ref[j].abs().max())
        assert scale > 0
        assert torch.allclose(tapped[j], ref[j], rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("grad", ["exact", "first_order"])
def test_ssiuu_steps_on_smollm2(smol, forget, retain, grad):
    cfg = UnlearningConfig(method="ssiuu", ssiuu_grad=grad, lam=1e-3, lr=1e-6)
    m = SSIUU(cfg)
    opt = torch.optim.AdamW(list(smol.hf_model.parameters()), lr=cfg.lr, weight_decay=0.0)
    lv1, t1 = train_step(smol, m, opt, forget[:2], retain[:2], 0)
    lv2, t2 = train_step(smol, m, opt, forget[:2], retain[:2], 0)
    assert t1["ssiuu_penalty"] == 0.0 and t1["ssiuu_negative"] > 0
    assert t2["ssiuu_penalty"] > 0.0 and math.isfinite(lv2) and math.isfinite(t2["grad_norm"])
    assert lv2 == pytest.approx(-t2["nll_forget"] + t2["nll_retain"] + 1e-3 * t2["ssiuu_penalty"], rel=1e-5)
