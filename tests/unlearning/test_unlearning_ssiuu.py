"""SSIUU (paper Eq. 3): the penalty and its exact / first-order gradients against hand computation,
finite differences and an independent autograd computation."""

from __future__ import annotations

import math

import pytest
import torch

from neuronscope.prompts import encode_qa, sequence_logprob
from neuronscope.unlearning import UnlearningConfig, unlearn
from neuronscope.unlearning.losses import GD
from neuronscope.unlearning.ssiuu import (
    SSIUU,
    attributed_weights,
    negative_set,
    neuron_penalty,
    parameter_attribution,
    ssiuu_regulariser,
)

# ----------------------------------------------------------------------------- toy known by hand
# P(W) = ½ Σ s_ij W_ij²  ⇒  g = s ⊙ W,  A = W ⊙ g = s ⊙ W²,  ∂A/∂W = 2 s ⊙ W (exact), g (first order)
W0 = [[1.0, 2.0], [3.0, 1.0]]
S = [[1.0, -1.0], [1.0, 1.0]]  # A = [[1, -4], [9, 1]]: row sums -3 (∈ I−) and 10
A_PREV = [[0.0, -1.0], [5.0, 5.0]]


def _toy(exact: bool, granularity: str):
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(S, dtype=torch.float64)
    objective = 0.5 * (s * w * w).sum()
    pen, cur, n_sel = ssiuu_regulariser(
        objective, [w], [torch.tensor(A_PREV, dtype=torch.float64)], granularity=granularity, exact=exact
    )
    (grad,) = torch.autograd.grad(pen, [w])
    return pen, cur[0], n_sel, grad


def test_toy_attribution_is_theta_times_gradient():
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(S, dtype=torch.float64)
    grads, attrs = parameter_attribution(0.5 * (s * w * w).sum(), [w], create_graph=False)
    assert torch.equal(grads[0], s * w.detach())
    assert attrs[0].tolist() == [[1.0, -4.0], [9.0, 1.0]]


def test_toy_row_penalty_and_gradients_by_hand():
    # row 0 ∈ I−: diff = A_prev − A = [-1, 3], ‖diff‖ = √10; row 1 (sum 10 > 0) does not count.
    # ∂pen/∂A_row0 = −diff/√10 = [1, −3]/√10
    # exact:       ⊙ 2 s W = [2, −4]  → [2, 12]/√10
    # first order: ⊙ g = s W = [1, −2] → [1, 6]/√10
    r10 = math.sqrt(10)
    pen, cur, n_sel, g_exact = _toy(True, "row")
    assert pen.item() == pytest.approx(r10, rel=1e-12)
    assert n_sel == 1
    assert cur.tolist() == [[1.0, -4.0], [9.0, 1.0]]
    assert torch.allclose(g_exact, torch.tensor([[2 / r10, 12 / r10], [0.0, 0.0]], dtype=torch.float64))
    pen_fo, _, _, g_fo = _toy(False, "row")
    assert pen_fo.item() == pytest.approx(r10, rel=1e-12)
    assert torch.allclose(g_fo, torch.tensor([[1 / r10, 6 / r10], [0.0, 0.0]], dtype=torch.float64))


def test_toy_element_penalty_and_gradients_by_hand():
    # I− = {(0,1)} (A = −4); |A_prev − A| = |−1 + 4| = 3; ∂/∂A = −1
    # exact: −1 · 2·s·W = −1 · (−4) = 4;  first order: −1 · g = −1 · (−2) = 2
    pen, _, n_sel, g_exact = _toy(True, "element")
    assert pen.item() == pytest.approx(3.0)
    assert n_sel == 1
    assert g_exact.tolist() == [[0.0, 4.0], [0.0, 0.0]]
    _, _, _, g_fo = _toy(False, "element")
    assert g_fo.tolist() == [[0.0, 2.0], [0.0, 0.0]]


def test_first_visit_has_zero_penalty_and_no_graph():
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    pen, cur, n_sel, = ssiuu_regulariser(0.5 * (w * w).sum() * -1, [w], None, exact=True)[:3]
    assert pen is None  # A_prev := A_cur → penalty 0 and zero (sub)gradient: nothing to add
    assert n_sel == 2 and not cur[0].requires_grad


def test_zero_difference_row_has_zero_gradient_not_nan():
    a = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    pen, n = neuron_penalty(a, a.detach().clone())
    pen.backward()
    assert pen.item() == 0.0 and n == 1
    assert a.grad.tolist() == [[0.0, 0.0]]


# ----------------------------------------------------------------------------- toy MLP, float64: FD


def _mlp_setup():
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 2, 4])
    prev = [torch.randn(6, 4, generator=g, dtype=torch.float64) * 0.1, torch.randn(5, 6, generator=g, dtype=torch.float64) * 0.1]
    v = [torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g, dtype=torch.float64)]
    return w1, w2, x, y, prev, v


def _mlp_penalty(w1, w2, x, y, prev, exact, granularity="row"):
    p = torch.softmax(torch.tanh(x @ w1.T) @ w2.T, dim=-1)[torch.arange(3), y].sum()
    return ssiuu_regulariser(p, [w1, w2], prev, granularity=granularity, exact=exact)[0]


@pytest.mark.parametrize("granularity", ["row", "element"])
def test_exact_gradient_matches_finite_differences_on_mlp(granularity):
    w1, w2, x, y, prev, v = _mlp_setup()
    pen = _mlp_penalty(w1, w2, x, y, prev, True, granularity)
    g1, g2 = torch.autograd.grad(pen, [w1, w2])
    analytic = float((g1 * v[0]).sum() + (g2 * v[1]).sum())
    eps = 1e-6
    plus = _mlp_penalty((w1 + eps * v[0]).detach().requires_grad_(), (w2 + eps * v[1]).detach().requires_grad_(), x, y, prev, True, granularity)
    minus = _mlp_penalty((w1 - eps * v[0]).detach().requires_grad_(), (w2 - eps * v[1]).detach().requires_grad_(), x, y, prev, True, granularity)
    fd = (plus.item() - minus.item()) / (2 * eps)
    assert analytic == pytest.approx(fd, rel=1e-6)
    # the first-order gradient misses the Hessian term and so differs from the true derivative
    pen_fo = _mlp_penalty(w1, w2, x, y, prev, False, granularity)
    f1, f2 = torch.autograd.grad(pen_fo, [w1, w2])
    first = float((f1 * v[0]).sum() + (f2 * v[1]).sum())
    assert abs(first - fd) > 1e-3 * abs(fd)


# ----------------------------------------------------------------------------- tiny Llama


def _tiny_objective(model, items, target="logprob"):
    b = encode_qa(model.tokenizer, [i.question for i in items], [i.answer for i in items])
    lp = sequence_logprob(model.bridge(b.input_ids, attention_mask=b.attention_mask), b)
    return lp.sum() if target == "logprob" else lp.exp().sum()


def _with_grad(model):
    for p in model.hf_model.parameters():
        p.requires_grad_(True)


def test_tiny_first_order_gradient_is_r_times_g(tiny, forget):
    _with_grad(tiny)
    ws = attributed_weights(tiny, ("q", "k", "v", "o", "gate", "up", "down"))
    assert len(ws) == 7 * tiny.arch.n_layers
    gen = torch.Generator().manual_seed(0)
    g0 = torch.autograd.grad(_tiny_objective(tiny, forget[:2]), ws)
    prev = [(w * g).detach() + 0.05 * torch.randn(w.shape, generator=gen, dtype=w.dtype) * (w * g).detach().abs().mean() for w, g in zip(ws, g0)]
    pen = ssiuu_regulariser(_tiny_objective(tiny, forget[:2]), ws, prev, exact=False)[0]
    got = torch.autograd.grad(pen, ws)
    for w, g, p, gr in zip(ws, g0, prev, got):
        a = w.detach() * g
        diff = p - a
        norm = diff.norm(dim=1, keepdim=True)
        neg = (a.sum(dim=1, keepdim=True) < 0).to(a.dtype)
        expected = -(diff / norm) * g * neg  # ∂/∂θ ‖A_prev − θ⊙g‖ with g constant
        assert torch.allclose(gr, expected, rtol=1e-6, atol=1e-12 * float(expected.abs().max() + 1))


def test_tiny_exact_gradient_matches_finite_differences(tiny, forget):
    """Directional derivative of the penalty along a random direction (Richardson-extrapolated
    central differences: HF's RMSNorm computes in float32 even in a float64 model)."""
    _with_grad(tiny)
    ws = attributed_weights(tiny, ("gate", "up", "down", "q", "o"))
    gen = torch.Generator().manual_seed(1)
    g0 = torch.autograd.grad(_tiny_objective(tiny, forget[:2]), ws)
    prev = [(w * g).detach() * 0.5 for w, g in zip(ws, g0)]
    # I− is held at its value at θ (rows near a zero sum would otherwise flip under the step)
    sel = [negative_set(w.detach() * g) for w, g in zip(ws, g0)]
    v = [torch.randn(w.shape, generator=gen, dtype=w.dtype) * w.detach().abs().mean() for w in ws]

    def penalty_at(t: float) -> float:
        with torch.no_grad():
            for w, d in zip(ws, v):
                w.add_(t * d)
        try:
            pen = ssiuu_regulariser(_tiny_objective(tiny, forget[:2]), ws, prev, exact=False, selected=sel)[0]
            return pen.item()
        finally:
            with torch.no_grad():
                for w, d in zip(ws, v):
                    w.sub_(t * d)

    pen = ssiuu_regulariser(_tiny_objective(tiny, forget[:2]), ws, prev, exact=True, selected=sel)[0]
    exact = sum(float((g * d).sum()) for g, d in zip(torch.autograd.grad(pen, ws), v))
    pen_fo = ssiuu_regulariser(_tiny_objective(tiny, forget[:2]), ws, prev, exact=False, selected=sel)[0]
    first = sum(float((g * d).sum()) for g, d in zip(torch.autograd.grad(pen_fo, ws), v))
    h = 1e-3
    d1 = (penalty_at(h) - penalty_at(-h)) / (2 * h)
    d2 = (penalty_at(2 * h) - penalty_at(-2 * h)) / (4 * h)
    fd = (4 * d1 - d2) / 3
    assert exact == pytest.approx(fd, rel=2e-3)
    assert abs(first - fd) > 10 * abs(exact - fd)  # the Hessian term matters on a real model


def test_ssiuu_first_visit_is_a_gd_step_and_caches_attribution(tiny, forget, retain):
    _with_grad(tiny)
    cfg = UnlearningConfig(method="ssiuu", ssiuu_anchor="batch", lam=0.5, ssiuu_target="logprob")
    ssiuu, gd = SSIUU(cfg), GD(cfg)
    params = list(tiny.hf_model.parameters())
    # as train_step: zero, loss (the log-P objective's backward already holds the forget part of
    # ∇L_GD and is accumulated into .grad there), backward, after_backward
    for p in params:
        p.grad = None
    loss_s, terms = ssiuu.loss(tiny, forget[:2], retain[:2], 3)
    loss_s.backward()
    assert ssiuu.after_backward(tiny) == 0.0
    gs = [p.grad.clone() for p in params]
    loss_g, _ = gd.loss(tiny, forget[:2], retain[:2], 3)
    assert loss_s.item() == pytest.approx(loss_g.item(), rel=1e-12)
    assert terms["ssiuu_penalty"] == 0.0 and terms["ssiuu_negative"] > 0
    gg = torch.autograd.grad(loss_g, params, allow_unused=True)
    for a, b in zip(gs, gg):
        # to float32 rounding (HF's RMSNorm computes in float32 even in a float64 model)
        assert b is not None and torch.allclose(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))
    assert ssiuu.cache == {}
    ssiuu.after_step(3)
    ws = attributed_weights(tiny, cfg.ssiuu_modules)
    g = torch.autograd.grad(_tiny_objective(tiny, forget[:2]), ws)
    assert set(ssiuu.cache) == {3}
    for c, w, gw in zip(ssiuu.cache[3], ws, g):
        assert torch.allclose(c, w.detach() * gw, rtol=1e-6, atol=1e-12)


def test_ssiuu_second_visit_penalty_uses_cached_attribution(tiny, forget, retain):
    cfg = UnlearningConfig(method="ssiuu", lr=1e-3, lam=1.0, ssiuu_target="logprob", batch_size=5, max_epochs=2, threshold=-1.0)
    # one forget batch: A_prev is exactly the attribution at θ^{t−1}
    res = unlearn(tiny, forget, retain, cfg, progress=False)
    assert res.steps == 2
    assert res.history[1]["ssiuu_penalty"] == 0.0
    assert res.history[2]["ssiuu_penalty"] > 0.0


@pytest.mark.parametrize("granularity", ["row", "element"])
def test_closed_form_first_order_step_equals_autograd(tiny, forget, retain, granularity):
    """The trainer's first-order path (∂P/∂θ tapped from the GD backward, closed-form penalty
    gradient added after it) equals differentiating GD + λ·penalty with ∂P/∂θ detached."""
    _with_grad(tiny)
    cfg = UnlearningConfig(method="ssiuu", ssiuu_anchor="batch", lam=0.7, ssiuu_grad="first_order", ssiuu_target="logprob",
                           ssiuu_granularity=granularity)
    params = list(tiny.hf_model.parameters())
    ws = attributed_weights(tiny, cfg.ssiuu_modules)
    g0 = torch.autograd.grad(_tiny_objective(tiny, forget[:2]), ws)
    gen = torch.Generator().manual_seed(2)
    prev = [(w.detach() * g) * (1 + 0.3 * torch.randn(w.shape, generator=gen, dtype=w.dtype)) for w, g in zip(ws, g0)]

    m = SSIUU(cfg)
    m.cache[0] = prev
    loss, terms = m.loss(tiny, forget[:2], retain[:2], 0)
    for p in params:
        p.grad = None
    loss.backward()
    extra = m.after_backward(tiny)
    got = [None if p.grad is None else p.grad.clone() for p in params]
    m.after_step(0)
    # the gradient collected by the tap is ∂P/∂θ (to float32 rounding: HF's RMSNorm computes in
    # float32 even in a float64 model, and the two computations round differently)
    for c, w, g in zip(m.cache[0], ws, g0):
        ref = w.detach() * g
        assert torch.allclose(c, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))

    for p in params:
        p.grad = None
    ref_loss, _ = GD(cfg).loss(tiny, forget[:2], retain[:2], 0)
    pen = ssiuu_regulariser(_tiny_objective(tiny, forget[:2]), ws, prev, granularity=granularity, exact=False)[0]
    (ref_loss + 0.7 * pen).backward()
    assert loss.item() + extra == pytest.approx((ref_loss + 0.7 * pen).item(), rel=1e-6)
    assert terms["ssiuu_penalty"] == pytest.approx(pen.item(), rel=1e-6)
    for p, g in zip(params, got):
        assert (g is None and p.grad is None) or torch.allclose(g, p.grad, rtol=1e-5, atol=1e-6 * float(p.grad.abs().max()))
