"""TOFU path: ROUGE-L recall (rouge-score and by hand), τ from mismatched pairs, generation, pipeline."""

from __future__ import annotations

import random
import re

import pytest

from neuronscope.data import QAItem, generate_tofu
from neuronscope.errors import ConfigError
from neuronscope.tofu import (
    TofuConfig,
    generate_answers,
    mismatched_pairs,
    rouge_evaluate,
    rouge_l_recall,
    rouge_threshold,
    run_tofu,
)


def lcs(a: list[str], b: list[str]) -> int:
    """Longest common subsequence length, textbook dynamic programming."""
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            t[i + 1][j + 1] = t[i][j] + 1 if x == y else max(t[i][j + 1], t[i + 1][j])
    return t[-1][-1]


def hand_recall(prediction: str, reference: str) -> float:
    tok = lambda s: re.findall(r"[a-z0-9]+", s.lower())  # noqa: E731 - rouge-score's tokenisation without stemming
    ref = tok(reference)
    return lcs(ref, tok(prediction)) / len(ref) if ref else 0.0


# ---------------------------------------------------------------- ROUGE-L recall
def test_rouge_l_recall_hand_examples() -> None:
    # LCS("the cat sat on the mat", "the cat was on a mat") = "the cat on mat" → 4 / 6.
    assert rouge_l_recall("the cat was on a mat", "the cat sat on the mat") == pytest.approx(4 / 6)
    # Recall divides by the reference length: a long prediction containing the reference scores 1.
    assert rouge_l_recall("well, Lioren Vask was born in Tallinn, Estonia, I think", "Lioren Vask was born in Tallinn, Estonia.") == 1.0
    # Order matters (subsequence, not bag of words): "b a" vs "a b" → LCS 1.
    assert rouge_l_recall("b a", "a b") == pytest.approx(0.5)
    assert rouge_l_recall("", "anything here") == 0.0
    assert rouge_l_recall("no overlap", "") == 0.0
    # Porter stemming (the TOFU setting): "writes novels" matches "wrote novel"? only "novel(s)".
    assert rouge_l_recall("she writes novels", "she writes novel") == 1.0
    assert rouge_l_recall("she writes novels", "she writes novel", use_stemmer=False) == pytest.approx(2 / 3)


def test_rouge_l_recall_matches_rouge_score_and_hand_lcs_on_random_strings() -> None:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(0)
    words = ["the", "author", "born", "in", "paris", "wrote", "a", "book", "of", "poems", "1975", "x"]
    for _ in range(200):
        ref = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        pred = " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        ours = rouge_l_recall(pred, ref, use_stemmer=False)
        assert ours == pytest.approx(scorer.score(ref, pred)["rougeL"].recall)
        assert ours == pytest.approx(hand_recall(pred, ref))


# ---------------------------------------------------------------- τ
def test_mismatched_pairs_never_pair_an_item_with_itself() -> None:
    for n in (2, 3, 10):
        for seed in range(5):
            pairs = mismatched_pairs(n, seed)
            assert len(pairs) == n and all(j != i and 0 <= j < n for i, j in enumerate(pairs))
            assert pairs == mismatched_pairs(n, seed)
    assert mismatched_pairs(2, 0) == [1, 0]
    assert len({tuple(mismatched_pairs(10, s)) for s in range(5)}) > 1  # the seed matters
    with pytest.raises(ConfigError, match="at least 2"):
        mismatched_pairs(1)


def test_tau_hand_example_two_answers() -> None:
    # With two answers each is scored against the other.
    a = "Alice was born in Paris."
    b = "Bob was born in Rome in 1950."
    # ref a (5 tokens), pred b: LCS "was born in" = 3 → 3/5; ref b (7 tokens), pred a: 3/7.
    assert rouge_threshold([a, b]) == pytest.approx((3 / 5 + 3 / 7) / 2)


def test_tau_hand_example_three_answers_follows_the_seeded_pairing() -> None:
    answers = ["x y z w", "x y q r", "p q r s"]
    pairs = mismatched_pairs(3, 4)
    by_hand = {  # recall of reference i when predicted by answer j
        (0, 1): 2 / 4, (0, 2): 0.0, (1, 0): 2 / 4, (1, 2): 2 / 4, (2, 0): 0.0, (2, 1): 2 / 4,
    }
    expected = sum(by_hand[(i, j)] for i, j in enumerate(pairs)) / 3
    assert rouge_threshold(answers, seed=4) == pytest.approx(expected)
    items = [QAItem(id=str(i), question="q", answer=a) for i, a in enumerate(answers)]
    assert rouge_threshold(items, seed=4) == pytest.approx(expected)  # items work too


def test_tau_of_generated_tofu_profiles_is_a_low_nonzero_overlap() -> None:
    items = generate_tofu(n_authors=20, questions_per_author=5, seed=0)
    tau = rouge_threshold(items, seed=0)
    assert tau == pytest.approx(sum(rouge_l_recall(items[j].answer, items[i].answer)
                                    for i, j in enumerate(mismatched_pairs(len(items), 0))) / len(items))
    assert 0.02 < tau < 0.5  # template words overlap a little, names and facts do not


# ---------------------------------------------------------------- generation and evaluation
def test_batched_generation_equals_one_by_one(tiny_llama) -> None:
    qs = ["Where was Ada born?", "Which award has the writer Lioren Vask received in her long career?", "Hi"]
    batched = generate_answers(tiny_llama, qs, max_new_tokens=5, batch_size=3)
    single = [generate_answers(tiny_llama, [q], max_new_tokens=5)[0] for q in qs]
    assert batched == single
    assert all(isinstance(a, str) and a for a in batched)


def test_greedy_generation_matches_argmax_continuation(tiny_llama) -> None:
    import torch

    from neuronscope.prompts import chat_prompt

    tok = tiny_llama.tokenizer
    ids = tok(chat_prompt(tok, "Name a colour."), add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(4):
            nxt = int(tiny_llama.hf_model(ids).logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    expected = tok.decode(out, skip_special_tokens=True).strip()
    assert generate_answers(tiny_llama, ["Name a colour."], max_new_tokens=4) == [expected]


def test_rouge_evaluate_scores_generations(tiny_llama) -> None:
    items = generate_tofu(n_authors=2, questions_per_author=2, seed=0)
    res = rouge_evaluate(tiny_llama, items, max_new_tokens=4)
    assert res.ids == [it.id for it in items]
    assert res.recalls == pytest.approx([rouge_l_recall(g, it.answer) for g, it in zip(res.generations, items)])
    assert res.score == pytest.approx(sum(res.recalls) / 4) and res.accuracy == res.score


def test_unlearning_loop_stops_on_rouge(tiny_llama) -> None:
    """stop_metric="rouge" in the shared loop uses rouge_evaluate: a random model is already ≤ τ."""
    from neuronscope.models import clone_model  # the loop trains in place: use a copy
    from neuronscope.unlearning import UnlearningConfig, unlearn

    items = generate_tofu(n_authors=3, questions_per_author=2, seed=0)
    forget, retain = items[:2], items[2:]
    tau = rouge_threshold(items)
    m = clone_model(tiny_llama)
    cfg = UnlearningConfig(method="gd", lr=1e-4, max_epochs=1, batch_size=2, stop_metric="rouge", threshold=tau)
    res = unlearn(m, forget, retain, cfg, progress=False)
    initial = rouge_evaluate(tiny_llama, forget).score
    assert res.initial_forget_score == pytest.approx(initial)
    assert initial <= tau and res.reached and res.steps == 0


# ---------------------------------------------------------------- pipeline
def test_run_tofu_pipeline_on_tiny_model(tiny_llama, tmp_path) -> None:
    calls = {}

    def fake_unlearn(model, forget, retain, cfg, *, run_dir=None, progress=True):
        calls["unlearn"] = dict(forget=[it.id for it in forget], retain=[it.id for it in retain], cfg=cfg, model=model)

        class R:
            reached, steps, seconds_per_step = True, 0, 0.0

        return R()

    cfg = TofuConfig(n_authors=4, questions_per_author=2, finetune_epochs=1, finetune_batch_size=4, max_new_tokens=3,
                     unlearning={"lr": 1e-4, "lam": 1e-4})
    res = run_tofu(cfg, tiny_llama, run_dir=tmp_path, progress=False, unlearn_fn=fake_unlearn)
    items = generate_tofu(4, 2, seed=0)
    assert res.tau == pytest.approx(rouge_threshold(items, seed=0))
    # Forget = 1 % → one whole author (2 questions); everything else is retained.
    assert len(res.splits["forget"]) == 2
    assert len({it.entity for it in items if it.id in res.splits["forget"]}) == 1
    assert sorted(res.splits["forget"] + res.splits["retain"]) == sorted(it.id for it in items)
    u = calls["unlearn"]
    assert u["cfg"].stop_metric == "rouge" and u["cfg"].threshold == pytest.approx(res.tau) and u["cfg"].lam == 1e-4
    assert u["forget"] == res.splits["forget"] and u["model"] is res.unlearned
    assert res.finetune["steps"] == 2  # 8 items / batch 4, one epoch
    # The fine-tuned model differs from the base; the base is untouched.
    import torch

    w = lambda m: m.linear("q", 0).weight  # noqa: E731
    assert not torch.equal(w(res.finetuned), w(tiny_llama))
    assert res.fs_finetuned == pytest.approx(rouge_evaluate(res.finetuned, [it for it in items if it.id in res.splits["forget"]],
                                                            max_new_tokens=3).score)
    saved = (tmp_path / "tofu_result.json").read_text()
    assert '"tau"' in saved and (tmp_path / "tofu_config.json").exists()


def test_tofu_config_validation() -> None:
    with pytest.raises(ConfigError, match="finetune_lr"):
        TofuConfig(finetune_lr=0)
    with pytest.raises(ConfigError, match="method"):
        TofuConfig(method="nope")
    assert TofuConfig().unlearning_config(0.2).threshold == 0.2


# ---------------------------------------------------------------- the embedded model (slow)
@pytest.mark.slow
def test_smollm2_answers_a_known_fact_with_high_rouge(smollm2) -> None:
    (answer,) = generate_answers(smollm2, ["What is the capital of France?"], max_new_tokens=12)
    assert "Paris" in answer
    assert rouge_l_recall(answer, "The capital of France is Paris.") >= 0.8
