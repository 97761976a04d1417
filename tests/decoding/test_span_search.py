"""The span search (``decoding.span_search``): every span at least ``floor`` likely as its label's
first value, against a brute-force search over the whole vocabulary with full forward passes."""
import math

import numpy as np
import pytest
import torch

from conftest import EXAMPLES, NER_LABELS, load, span_offsets
from spacy_seqgpt.decoding import Decoder, Decoding, Query
from spacy_seqgpt.decoding.matcher import Matchers
from spacy_seqgpt.kernels.constraints import ExtractionGrammar
from spacy_seqgpt.prompts import EXTRACT, NONE_ANSWERS, build_prompt

# The taught texts, and texts the tiny models never saw (where greedy answers "None" more often).
TEXTS = [text for _, text, _, _ in EXAMPLES] + ["Angela Merkel visited Microsoft in Madrid.",
                                                "Tim met Serena in Paris, then flew to Berlin."]


@pytest.fixture(scope="module", params=["bloom", "llama"])
def taught(request, seqgpt_tiny, seqgpt_tiny_llama):
    return load(seqgpt_tiny if request.param == "bloom" else seqgpt_tiny_llama, device="cpu")


def queries(texts=TEXTS, labels=NER_LABELS):
    return [Query(build_prompt(EXTRACT, text, labels), index, ExtractionGrammar(text, labels))
            for index, text in enumerate(texts)]


def brute_force(shared, query, answer, floor):
    """``{(line, span): probability}``: from where each line's first value opens in the greedy
    answer (the first token after which the grammar says so), every token path the grammar allows
    whose probability stays at least ``floor``, to where its value ends (a comma, a line break, the
    end); each model call a full forward pass over the prompt and the path, nothing cached."""
    vocab, eos = shared.token_table, shared.token_table.eos_id
    prompt = shared.tokenizer(query.prompt)["input_ids"]
    matchers = Matchers.start([query.grammar], vocab)
    opened = {}  # line -> (tokens written before its value, the grammar's state there)
    for written in range(len(answer.tokens) + 1):
        line = matchers.opens_value(0)
        if line >= 0 and line not in opened:
            opened[line] = (answer.tokens[:written], matchers.copy_row(0))
        if written < len(answer.tokens):
            matchers.write(0, answer.tokens[written])
    found = {}

    def expand(line, context, path, matcher, logprob):
        with torch.inference_mode():
            logits = shared.model(torch.tensor([prompt + context + path])).logits[0, -1]
        logprobs = torch.log_softmax(logits.double(), -1).numpy()
        for token in np.flatnonzero(logprob + logprobs >= math.log(floor)).tolist():
            after = Matchers([matcher.grammar], matcher.ints[None].copy(), matcher.bits[None].copy(), vocab)
            if not after.allowed(np.array([[token]]))[0, 0]:
                continue
            total = logprob + logprobs[token]
            data = b"".join(vocab.piece(t) or b"" for t in path + [token] if t != eos)
            ends = [at for at in (data.find(b","), data.find(b"\n")) if at >= 0]
            if token == eos or ends:
                span = data[:min(ends) if ends else len(data)].decode("utf8").strip()
                if span and span.casefold() not in NONE_ANSWERS:
                    found[line, span] = max(found.get((line, span), 0.0), math.exp(total))
                continue
            after.write(0, token)
            expand(line, context, path + [token], after.copy_row(0), total)

    for line, (context, matcher) in opened.items():
        expand(line, context, [], matcher, 0.0)
    return found


@pytest.mark.parametrize("floor", [0.3, 0.05, 0.005])
def test_the_span_search_finds_what_a_brute_force_search_finds(taught, floor):
    """Every span the brute force finds, and only those, with its probability; below a floor of
    1/64 a probe is asked about its 64 likeliest tokens only, so the lowest floor here asks more."""
    asked = queries()
    decoder = Decoder(taught, Decoding(batch_size=3, max_new_tokens=48, span_search=True), candidates=256)
    answers = decoder.decode(asked, span_floor=floor)
    searched = beside_the_answer = 0
    for query, answer in zip(asked, answers):
        expected = brute_force(taught, query, answer, floor)
        got = {(line, span): probability for line, span, probability in answer.found}
        # Probabilities on the floor itself may fall either side of it in the last bits.
        assert {key for key, p in expected.items() if p > floor * 1.001} <= set(got) <= set(expected), query.prompt
        for key, probability in got.items():
            assert probability == pytest.approx(expected[key], rel=1e-3)
        assert [p for _, _, p in answer.found] == sorted((p for _, _, p in answer.found), reverse=True)
        searched += len(got)
        written = {(NER_LABELS.index(label), span) for label, span, _ in answer.written_spans(NER_LABELS)}
        beside_the_answer += len(set(got) - written)
    assert searched  # the models give some spans that much
    if floor < 0.01:  # and some that greedy decoding does not write (a label's first value)
        assert beside_the_answer


def test_the_span_search_leaves_the_greedy_answer_as_it_is_and_a_higher_floor_finds_a_subset(taught):
    asked = queries()
    greedy = Decoder(taught, Decoding(batch_size=3, max_new_tokens=48)).decode(asked)
    found = {}
    for floor in (0.5, 0.1, 0.01):
        answers = Decoder(taught, Decoding(batch_size=3, max_new_tokens=48, span_search=True)).decode(
            asked, span_floor=floor)
        assert [a.text for a in answers] == [g.text for g in greedy]
        assert [a.tokens for a in answers] == [g.tokens for g in greedy]
        for answer, plain, text in zip(answers, greedy, TEXTS):
            assert plain.found == []
            for span in span_offsets(answer.text):  # a forced token's log-probability aside, the answer's
                assert answer.probability(*span) == pytest.approx(plain.probability(*span), abs=1e-4)
            for line, span, probability in answer.found:
                assert span in text and probability >= floor and 0 <= line < len(NER_LABELS)
        found[floor] = [{(line, span): p for line, span, p in answer.found} for answer in answers]
    for higher, lower in ((0.5, 0.1), (0.1, 0.01)):
        for few, many in zip(found[higher], found[lower]):
            assert set(few) <= set(many)
            for key in few:
                assert few[key] == pytest.approx(many[key], rel=1e-4)


def test_the_span_search_needs_greedy_constrained_decoding_and_a_floor(taught):
    for settings in ({"num_beams": 2}, {"constrained": False}):
        with pytest.raises(ValueError, match="span_search"):
            Decoding(span_search=True, **settings)
    decoder = Decoder(taught, Decoding(span_search=True, max_new_tokens=48))
    for floor in (-0.1, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            decoder.decode(queries(TEXTS[:1]), span_floor=floor)
    # No floor, no search (what classification asks with): greedy decoding's answers.
    greedy = Decoder(taught, Decoding(max_new_tokens=48)).decode(queries(TEXTS[:2]))
    assert [(a.text, a.found) for a in decoder.decode(queries(TEXTS[:2]))] == [(g.text, []) for g in greedy]
