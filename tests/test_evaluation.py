"""MCQA evaluation against the model's own logits and a hand-built example."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neuronscope.evaluation import answer_logprobs, mcqa_evaluate, paraphrased
from neuronscope.prompts import MCQA_TEMPLATE, encode_pairs, mcqa_prompt, sequence_logprob


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    answer: str
    false_options: tuple = ()
    paraphrases: tuple = ()

    def options(self, seed: int = 0):
        return [self.answer, *self.false_options]


ITEMS = [Item("a", "Which country is Albert Einstein from?", "Germany", ("Italy", "Spain"), ("Einstein's country?",)),
         Item("b", "What is the capital of France?", "Paris", ("Rome", "Oslo")),
         Item("c", "Which planet is known as the Red Planet?", "Mars", ("Venus", "Jupiter"))]


def test_answer_logprobs_equal_full_logits(tiny_qwen2):
    tok = tiny_qwen2.tokenizer
    batch = encode_pairs(tok, ["Hi there", "A longer prompt here, please"], ["yes indeed", "no"])
    with torch.no_grad():
        full = sequence_logprob(tiny_qwen2.bridge(batch.input_ids, attention_mask=batch.attention_mask), batch)
        fast = answer_logprobs(tiny_qwen2, batch)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-10)


def test_mcqa_prediction_is_argmax_of_option_likelihood(tiny_llama):
    res = mcqa_evaluate(tiny_llama, ITEMS, batch_size=4)
    tok = tiny_llama.tokenizer
    expected = []
    for it in ITEMS:
        opts = it.options()
        b = encode_pairs(tok, [mcqa_prompt(tok, it.question, opts)] * 3, opts)
        with torch.no_grad():
            lp = sequence_logprob(tiny_llama.bridge(b.input_ids, attention_mask=b.attention_mask), b)
        expected.append(opts[int(lp.argmax())])
        torch.testing.assert_close(torch.tensor(res.option_logprobs[len(expected) - 1], dtype=lp.dtype), lp, rtol=1e-6, atol=1e-6)
    assert res.predictions == expected
    assert res.accuracy == sum(p == it.answer for p, it in zip(expected, ITEMS)) / 3
    assert res.correct_ids() | res.wrong_ids() == {"a", "b", "c"}


def test_template_and_paraphrases(tiny_llama):
    p = mcqa_prompt(tiny_llama.tokenizer, "Q?", ["x", "y", "z"])
    assert MCQA_TEMPLATE.format(question="Q?", options="x, y, z") in p
    assert p.rstrip().endswith("assistant")
    para = paraphrased(ITEMS)
    assert [(i.id, i.question) for i in para] == [("a~p", "Einstein's country?")]
