"""The decoder behind seqgpt_ner/seqgpt_textcat: constraints, scores, shared prefixes, prefix-LM models."""
import itertools
import random

import numpy as np
import pytest
import spacy
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import CAT_LABELS, EXAMPLES, NER_LABELS, generate_texts, load, span_offsets
from spacy_seqgpt.data.conll import read_sentences
from spacy_seqgpt.decoding import Asker, Decoder, Decoding, Query
from spacy_seqgpt.decoding.prompt_encoding import length_buckets
from spacy_seqgpt.decoding.speculation import pass_width
from spacy_seqgpt.kernels.constraints import ClassificationGrammar, ExtractionGrammar
from spacy_seqgpt.prompts import CLASSIFY, EXTRACT, build_prompt, chunk_labels, parse_answer

ODD_TEXTS = [
    "",
    " ",
    "a",
    "Tim, Cook, and Olaf",
    "北京，上海。",
    "é\u0301 👍🏽 x",
    "None of None",
    "\t tabs\tand  spaces ",
    "U.S. firm's C++ code (v2.0) -- done!",
    "person: Tim\nlocation: Berlin",
    "ＡＢＣ，ｘ＂ｙ",
    "a" * 300,
]


def asked(texts, labels, chunk_size):
    """(text, label chunk) of each extraction prompt, one per chunk of each text."""
    return [(text, chunk) for text in texts for chunk in chunk_labels(labels, chunk_size)]


def queries_for(texts, labels, chunk_size, constrained=True):
    """Extraction queries, one group per text (its label chunks share the prompt's start)."""
    return [Query(build_prompt(EXTRACT, text, chunk), text, ExtractionGrammar(text, chunk) if constrained else None)
            for text, chunk in asked(texts, labels, chunk_size)]


def varied_texts(conll_sample, n, seed=0):
    rng = random.Random(seed)
    sentences = [" ".join(tokens) for path in conll_sample for tokens, _ in read_sentences(path)]
    sentences = rng.sample(sentences, n - len(ODD_TEXTS))
    return ODD_TEXTS + sentences


@pytest.fixture(scope="module")
def random_bloom(tiny_bloom):
    return load(tiny_bloom, device="cpu")


@pytest.fixture(scope="module")
def random_llama(tiny_llama):
    return load(tiny_llama, device="cpu")


@pytest.fixture(scope="module")
def taught(seqgpt_tiny):
    return load(seqgpt_tiny, device="cpu")


class WideAsker(Asker):
    def decoder(self) -> Decoder:
        return Decoder(self.shared, self.decoding, candidates=1024)


def test_a_random_model_constrained_always_answers_in_the_grammar_and_every_span_aligns(tiny_bloom, conll_sample):
    texts = varied_texts(conll_sample, 300)
    labels = ["person", "organization", "location", "miscellaneous"]
    for mode in ("expand", "strict"):
        nlp = spacy.blank("en")
        ner = nlp.add_pipe("seqgpt_ner", config={"model": tiny_bloom, "labels": labels, "label_chunk_size": 2,
                                                 "spans_key": "sc", "alignment_mode": mode,
                                                 "decoding": {"max_new_tokens": 24, "batch_size": 32}})
        # Random weights rarely rank an allowed token among the best 8, and the fallback then
        # prefers "None": checking every token makes the model write spans, many of them.
        ner.asker = lambda: WideAsker(ner.shared, ner.decoding, ner.stats)
        docs = list(nlp.pipe(texts[: 300 if mode == "expand" else 60], batch_size=100))
        assert ner.stats["answers"] > len(docs)  # random answers name many spans...
        assert ner.stats["dropped"] == 0 and ner.stats["unaligned"] == 0  # ...and every one is in the text
        assert sum(len(doc.spans["sc"]) for doc in docs) > 0


def test_random_constrained_answers_parse_completely_with_beams_too(random_bloom, random_llama):
    texts = ODD_TEXTS + ["Apple opened a new office in Paris.", "张三在北京工作。"]
    for shared in (random_bloom, random_llama):
        for beams in (1, 3):
            queries = queries_for(texts, NER_LABELS, 2)
            answers = Decoder(shared, Decoding(batch_size=8, max_new_tokens=48, num_beams=beams)).decode(queries)
            for (text, chunk), query, answer in zip(asked(texts, NER_LABELS, 2), queries, answers):
                if answer.complete:
                    assert query.grammar.accepts(answer.text), answer.text
                    assert [line.split(":")[0] for line in answer.text.split("\n")] == chunk
                for spans in parse_answer(EXTRACT, answer.text, chunk).values():
                    assert all(span in text for span in spans)
            classify = [Query(build_prompt(CLASSIFY, text, CAT_LABELS), None, ClassificationGrammar(CAT_LABELS, True))
                        for text in texts]
            for answer in Decoder(shared, Decoding(batch_size=8, max_new_tokens=16, num_beams=beams)).decode(classify):
                assert answer.complete and answer.text in CAT_LABELS


def taught_queries(constrained):
    queries = []
    for index, (_, text, _, _) in enumerate(EXAMPLES):
        queries.append(Query(build_prompt(EXTRACT, text, NER_LABELS), index,
                             ExtractionGrammar(text, NER_LABELS) if constrained else None))
        queries.append(Query(build_prompt(CLASSIFY, text, CAT_LABELS), index,
                             ClassificationGrammar(CAT_LABELS, True) if constrained else None))
    return queries


@pytest.mark.parametrize("beams", [1, 2])
def test_constrained_and_free_decoding_agree_with_the_taught_model(taught, beams):
    decoder = Decoder(taught, Decoding(batch_size=4, max_new_tokens=40, num_beams=beams))
    free = [answer.text for answer in decoder.decode(taught_queries(False))]
    constrained = [answer.text for answer in decoder.decode(taught_queries(True))]
    assert constrained == free
    assert parse_answer(EXTRACT, free[0], NER_LABELS) == {"person": ["Tim Cook", "Olaf Scholz"], "organization": [],
                                                         "location": ["Berlin"]}


def test_the_components_write_the_same_with_and_without_constraints(seqgpt_tiny):
    def annotate(constrained):
        nlp = spacy.blank("en")
        nlp.add_pipe("seqgpt_ner", config={"model": seqgpt_tiny, "labels": NER_LABELS,
                                           "decoding": {"constrained": constrained}})
        nlp.add_pipe("seqgpt_textcat", config={"model": seqgpt_tiny, "labels": CAT_LABELS,
                                               "decoding": {"constrained": constrained}})
        return [([(e.start_char, e.end_char, e.label_) for e in doc.ents], doc.cats)
                for doc in nlp.pipe([text for lang, text, _, _ in EXAMPLES if lang == "en"])]

    assert annotate(True) == annotate(False)


def test_free_greedy_decoding_is_transformers_generate(taught, random_llama):
    for shared in (taught, random_llama):
        queries = taught_queries(False)
        ours = [answer.text for answer in Decoder(shared, Decoding(batch_size=5, max_new_tokens=30)).decode(queries)]
        theirs = generate_texts(shared, [query.prompt for query in queries], max_new_tokens=30)
        assert ours == theirs


@pytest.mark.parametrize("beams", [1, 2])
def test_sharing_the_prefix_cache_gives_the_same_answers_as_encoding_every_prompt(random_bloom, random_llama, beams):
    texts = ODD_TEXTS[:6] + ["Tim Cook met Olaf Scholz in Berlin.", "The bank raised rates again."]
    for shared in (random_bloom, random_llama):
        # groups of three chunks, and prompts alone in their group, mixed in batches
        queries = queries_for(texts, ["person", "organization", "location", "date", "event"], 2) + [
            Query(build_prompt(CLASSIFY, text, CAT_LABELS), None, ClassificationGrammar(CAT_LABELS, False))
            for text in texts[:4]]
        shared_runs = Decoder(shared, Decoding(batch_size=8, max_new_tokens=20, num_beams=beams)).decode(queries)
        alone = Decoder(shared, Decoding(batch_size=8, max_new_tokens=20, num_beams=beams),
                        share_prefixes=False).decode(queries)
        assert [a.text for a in shared_runs] == [a.text for a in alone]
        for a, b in zip(shared_runs, alone):
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)


def full_logprobs(shared, prompt, tokens, **kwargs):
    """Log-probability of each of ``tokens`` after ``prompt``: one forward pass, no cache."""
    prompt_ids = shared.tokenizer(prompt)["input_ids"]
    ids = torch.tensor([prompt_ids + tokens])
    with torch.no_grad():
        logits = shared.model(input_ids=ids, **kwargs).logits[0].float()
    logprobs = torch.log_softmax(logits[len(prompt_ids) - 1:-1], -1)
    return logprobs[torch.arange(len(tokens)), torch.tensor(tokens)].numpy()


def test_token_logprobs_are_those_of_a_full_forward_pass(taught, random_bloom):
    """Every token the model chose, by a step or by confirming a draft (jump-forward's forced
    tokens have log-probability 0: off here)."""
    for shared in (taught, random_bloom):
        queries = taught_queries(True)
        decoder = Decoder(shared, Decoding(batch_size=3, max_new_tokens=16, jump_forward=False, speculate=True))
        for query, answer in zip(queries, decoder.decode(queries)):
            np.testing.assert_allclose(answer.logprobs, full_logprobs(shared, query.prompt, answer.tokens), atol=1e-4)


def test_span_scores_are_probabilities_stored_as_spacy_stores_them(seqgpt_tiny):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"model": seqgpt_tiny, "labels": NER_LABELS, "spans_key": "sc"})
    doc = nlp(EXAMPLES[0][1])
    scores = doc.spans["sc"].attrs["scores"]
    assert len(scores) == len(doc.spans["sc"]) == 3
    assert all(0.5 < score <= 1.0 for score in scores)  # taught answers: confident
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"model": seqgpt_tiny, "labels": NER_LABELS})
    ents = nlp(EXAMPLES[0][1]).ents
    assert [ent._.seqgpt_score for ent in ents] == pytest.approx(scores)


def test_the_threshold_keeps_exactly_the_spans_scored_at_or_above_it(seqgpt_tiny):
    # taught sentences (confident spans) and changed ones (the model hesitates)
    texts = [text for _, text, _, _ in EXAMPLES] + ["Tim Cook met Olaf Scholz in Paris.", "Apple met Olaf in Berlin."]

    def spans(threshold):
        nlp = spacy.blank("en")
        nlp.add_pipe("seqgpt_ner", config={"model": seqgpt_tiny, "labels": NER_LABELS, "spans_key": "sc",
                                           "threshold": threshold})
        return [list(zip([(s.start, s.end, s.label_) for s in doc.spans["sc"]], doc.spans["sc"].attrs["scores"]))
                for doc in nlp.pipe(texts)]

    everything = spans(0.0)
    found = sorted(score for doc in everything for _, score in doc)
    assert all(0.0 <= score <= 1.0 for score in found) and found[0] < 0.5 < found[-1]
    cut = found[len(found) // 2]
    assert spans(cut) == [[(span, score) for span, score in doc if score >= cut] for doc in everything]


def test_textcat_scoring_gives_label_probabilities_from_the_model(seqgpt_tiny, taught):
    nlp = spacy.blank("en")
    textcat = nlp.add_pipe("seqgpt_textcat", config={"model": seqgpt_tiny, "labels": CAT_LABELS, "probabilities": True})
    for _, text, _, category in EXAMPLES:
        cats = nlp(text).cats
        assert sum(cats.values()) == pytest.approx(1.0)
        assert max(cats, key=cats.get) == category
    # each label's probability is its answer's likelihood, normalised over the labels
    prompt = build_prompt(CLASSIFY, EXAMPLES[1][1], CAT_LABELS)
    eos = taught.tokenizer.eos_token_id
    likelihoods = [
        full_logprobs(taught, prompt, taught.tokenizer(label, add_special_tokens=False)["input_ids"] + [eos]).sum()
        for label in CAT_LABELS
    ]
    expected = torch.softmax(torch.tensor(likelihoods), 0).numpy()
    np.testing.assert_allclose(textcat.classification.label_probabilities(textcat.asker(), [prompt])[0], expected,
                               atol=1e-4)
    multi = spacy.blank("en")
    multi.add_pipe("seqgpt_textcat", config={"model": seqgpt_tiny, "labels": CAT_LABELS, "probabilities": True,
                                             "multi_label": True, "decoding": {"batch_size": 2}})
    for doc in multi.pipe([text for _, text, _, _ in EXAMPLES]):
        assert all(0.0 <= p <= 1.0 for p in doc.cats.values())


@pytest.mark.parametrize("text", ["", "  \n "])
def test_textcat_scoring_of_a_doc_without_text_gives_zeros_alone_or_batched(seqgpt_tiny, text):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_textcat", config={"model": seqgpt_tiny, "labels": CAT_LABELS, "probabilities": True})
    assert nlp(text).cats == dict.fromkeys(CAT_LABELS, 0.0)
    empty, other = nlp.pipe([text, "The team won the final."])
    assert empty.cats == dict.fromkeys(CAT_LABELS, 0.0) and sum(other.cats.values()) == pytest.approx(1.0)


def test_textcat_scoring_averages_the_windows_of_a_long_document(seqgpt_tiny):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_textcat", config={"model": seqgpt_tiny, "labels": CAT_LABELS, "probabilities": True,
                                           "decoding": {"max_input_tokens": 24}})
    doc = nlp(" ".join(text for lang, text, _, _ in EXAMPLES if lang == "en"))
    assert sum(doc.cats.values()) == pytest.approx(1.0)


def greedy_by_recomputation(shared, prompt, max_new_tokens):
    """The prefix-LM answer from first principles: the whole sequence re-encoded at every step,
    prompt tokens bidirectional (id 0) in the unmasked layers, generated ones causal (-1).
    Returns the tokens and each one's log-probability."""
    ids = shared.tokenizer(prompt)["input_ids"]
    n_prompt, logprobs = len(ids), []
    for _ in range(max_new_tokens):
        bidirectional = torch.tensor([[0] * n_prompt + [-1] * (len(ids) - n_prompt)])
        with torch.no_grad():
            logits = shared.model(input_ids=torch.tensor([ids]), bidirectional_ids=bidirectional).logits[0, -1]
        token = int(logits.argmax())
        if token == shared.tokenizer.eos_token_id:
            break
        ids.append(token)
        logprobs.append(float(torch.log_softmax(logits.float(), -1)[token]))
    return ids[n_prompt:], logprobs


@pytest.mark.parametrize("model", ["seqgpt_tiny", "tiny_llama"])
def test_prefix_lm_models_decode_with_the_prompt_bidirectional(model, request):
    path = request.getfixturevalue(model)
    stock = load(path, device="cpu")
    shared = load(path, device="cpu", unmask="0110")
    assert shared.model is not stock.model
    texts = ["Tim Cook met Olaf Scholz in Berlin.", "Apple opened a new office in Paris.", "北京"]
    queries = queries_for(texts, NER_LABELS, 2, constrained=False)
    ours = Decoder(shared, Decoding(batch_size=4, max_new_tokens=12)).decode(queries)
    for query, answer in zip(queries, ours):
        tokens, logprobs = greedy_by_recomputation(shared, query.prompt, 12)
        assert answer.tokens == tokens
        np.testing.assert_allclose(answer.logprobs, logprobs, atol=1e-4)
    causal = Decoder(stock, Decoding(batch_size=4, max_new_tokens=12)).decode(queries)
    # the unmasked layers do change what the model says
    assert not np.allclose([a.logprobs[0] for a in ours], [a.logprobs[0] for a in causal], atol=1e-3)
    constrained = Decoder(shared, Decoding(batch_size=4, max_new_tokens=48)).decode(queries_for(texts, NER_LABELS, 2))
    assert all(answer.text.startswith(("person: ", "location: ")) for answer in constrained)


def test_bad_settings_are_named(seqgpt_tiny):
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="threshold"):
        nlp.add_pipe("seqgpt_ner", config={"model": seqgpt_tiny, "labels": NER_LABELS, "threshold": 1.5})
    with pytest.raises(ValueError, match="unmask"):
        nlp.add_pipe("seqgpt_ner", config={"model": {"name": seqgpt_tiny, "unmask": "01x"}, "labels": NER_LABELS})
    with pytest.raises(ValueError, match="at most 4 digits"):
        nlp.add_pipe(
            "seqgpt_textcat", config={"model": {"name": seqgpt_tiny, "unmask": "01101"}, "labels": CAT_LABELS}
        )(nlp.make_doc("text"))


@pytest.mark.parametrize("unmask", [None, "0110"])
def test_the_defaults_write_what_step_by_step_decoding_writes(seqgpt_tiny, seqgpt_tiny_llama, unmask):
    """Jump-forward and speculation (the defaults) against step-by-step decoding, on models
    taught their answers: the same texts, spans and span scores; BLOOM and Llama, greedy and
    beams (which go step by step), causal and prefix-LM. Step by step encodes prompts in one
    pass. The defaults, with no pass overhead, encode them in as many passes as they have
    lengths and cut chains short (a token then costs what it saves); with an overhead too
    large for either, they encode in one pass and read whole chains."""
    for path in (seqgpt_tiny, seqgpt_tiny_llama):
        shared = load(path, device="cpu", **({"unmask": unmask} if unmask else {}))
        queries = taught_queries(True)
        for beams, overhead in ((1, 0), (1, 10 ** 9), (2, 0)):
            fast = Decoder(shared, Decoding(batch_size=4, max_new_tokens=40, num_beams=beams))
            fast.pass_overhead = overhead
            answers = fast.decode(queries)
            step_by_step = Decoder(shared, Decoding(batch_size=4, max_new_tokens=40, num_beams=beams,
                                                    jump_forward=False, speculate=False))
            step_by_step.pass_overhead = 10 ** 9
            slow = step_by_step.decode(queries)
            assert [a.text for a in answers] == [b.text for b in slow]
            assert [a.complete for a in answers] == [b.complete for b in slow]
            for a, b in zip(answers, slow):
                spans = span_offsets(a.text) if "\n" in a.text else [(0, len(a.text))]
                np.testing.assert_allclose([a.probability(*span) for span in spans],
                                           [b.probability(*span) for span in spans], atol=1e-4)
            if beams == 1 and overhead:  # both shortcuts were taken, and some guesses kept
                assert fast.jumped > 0 and fast.accepted > 0
            elif beams > 1:
                assert fast.jumped == fast.drafted == 0


@pytest.mark.parametrize("arch", ["bloom", "llama"])
def test_the_cache_written_in_place_gives_what_transformers_cache_gives(arch, random_bloom, random_llama):
    """Through growth past its room, beam-style reorders and multi-token steps."""
    from spacy_seqgpt.decoding.kv_cache import PreallocatedCache, cache_keyword, returned_cache

    model = (random_bloom if arch == "bloom" else random_llama).model
    ids = torch.randint(5, 200, (3, 12), generator=torch.Generator().manual_seed(0))
    runs = []
    for cache in (None, PreallocatedCache(room=2)):
        logits = []
        with torch.inference_mode():
            out = model(input_ids=ids[:, :5], attention_mask=torch.ones(3, 5, dtype=torch.long),
                        use_cache=True, **{cache_keyword(model): cache})
            cache = returned_cache(out)
            cache.reorder_cache(torch.tensor([2, 0, 0]))
            for start, end in ((5, 6), (6, 9), (9, 10), (10, 12)):
                out = model(input_ids=ids[:, start:end], attention_mask=torch.ones(3, end, dtype=torch.long),
                            use_cache=True, **{cache_keyword(model): cache})
                logits.append(out.logits)
        assert cache.get_seq_length() == 12
        runs.append(logits)
    for expected, got in zip(*runs):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["bloom", "llama"])
def test_prompts_encoded_in_passes_of_like_lengths_leave_one_pass_s_cache(arch, random_bloom, random_llama):
    """The stacked cache (and mask) of several passes reads as one left-padded pass's: same last
    logits, same logits of the tokens written after."""
    shared = random_bloom if arch == "bloom" else random_llama
    decoder = Decoder(shared, Decoding(batch_size=8, max_new_tokens=4))
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(5, 200, (n,), generator=generator).tolist() for n in (3, 17, 9, 16, 4)]
    written = torch.randint(5, 200, (len(prompts), 3), generator=generator)
    runs = []
    for overhead in (0, 10 ** 9):  # a pass per length, then a single pass
        decoder.pass_overhead = overhead
        with torch.inference_mode():
            last, cache, mask, cache_row = decoder.calls.encode(prompts, 2, decoder.pass_overhead)
            cache.reorder_cache(cache_row)
            mask = torch.cat([mask[cache_row], torch.ones(written.shape, dtype=mask.dtype)], 1)
            after, cache = decoder.calls.forward(written, mask, cache, None, keep=0)
        runs.append((last[cache_row], after))
    assert len(length_buckets(sorted(map(len, prompts), reverse=True), 0)) == len(prompts)
    for expected, got in zip(*runs):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@given(st.lists(st.integers(1, 60), min_size=1, max_size=7), st.integers(0, 80))
@settings(max_examples=200, deadline=None)
def test_length_buckets_compute_the_fewest_tokens(lengths, overhead):
    """Against every split of the sorted lengths into consecutive passes."""
    lengths = sorted(lengths, reverse=True)

    def cost(sizes):
        starts = np.cumsum([0, *sizes[:-1]])
        return sum(size * lengths[start] + overhead for start, size in zip(starts, sizes))

    sizes = length_buckets(lengths, overhead)
    assert sum(sizes) == len(lengths) and min(sizes) >= 1
    splits = itertools.product([False, True], repeat=len(lengths) - 1)
    every = [np.diff([0, *[i + 1 for i, cut in enumerate(split) if cut], len(lengths)]).tolist() for split in splits]
    assert cost(sizes) == min(cost(other) for other in every)


@given(st.lists(st.tuples(st.integers(0, 6), st.lists(st.booleans(), max_size=8)), min_size=1, max_size=5),
       st.integers(0, 100), st.floats(0, 1))
@example([(0, [True, False, False])], 0, 0.24036582563509717)  # three equal rates, unequal in the last bits
@settings(max_examples=200, deadline=None)
def test_a_pass_is_as_wide_as_makes_the_most_expected_progress_per_cost(rows, overhead, accept):
    """Against the expectation written out token by token, at every width from the longest
    lead to the longest row; the narrowest of equals."""
    leads, guessed = [lead for lead, _ in rows], [flags for _, flags in rows]

    def rate(width):
        progress = 0.0
        for lead, flags in zip(leads, guessed):
            progress += lead
            for n in range(min(len(flags), width - lead)):
                progress += accept ** sum(flags[:n + 1])
        return progress / (overhead + len(rows) * width)

    widths = range(max(max(leads), 1), max(lead + len(flags) for lead, flags in rows) + 1)
    if not widths:  # nothing to read
        assert pass_width(leads, guessed, overhead, accept) == 0
        return
    best = max(rate(width) for width in widths)
    width = pass_width(leads, guessed, overhead, accept)
    assert width in widths
    assert rate(width) == pytest.approx(best, rel=2e-9)  # equal rates may differ in their last bits
    assert all(rate(narrower) < best * (1 - 5e-10) for narrower in widths if narrower < width)
    # passes of unbounded cost: every guess that may be kept is read
    assert pass_width(leads, guessed, float("inf"), 1.0) == widths[-1]


@pytest.mark.parametrize("beams", [1, 2])
def test_a_pass_is_made_only_for_logits_that_are_read(random_bloom, beams):
    """Step by step, each forward pass gives the logits of one more token: a greedy answer cut
    at ``max_new_tokens`` took that many passes, one that wrote the end one more, and beams
    never take more than ``max_new_tokens``. (A pass after the last allowed token was once
    made, and its logits never read.)"""
    decoder = Decoder(random_bloom, Decoding(batch_size=1, max_new_tokens=3, num_beams=beams, jump_forward=False,
                                             speculate=False))
    passes = []
    hook = random_bloom.model.register_forward_hook(lambda *args: passes.append(1))
    try:
        answers = []
        for text in ("Tim Cook visited Berlin.", "Rain.", "Olaf?"):  # one prompt at a time
            passes.clear()
            answers.append(decoder.decode([Query(build_prompt(EXTRACT, text, NER_LABELS))])[0])
            if beams == 1:
                assert len(passes) == len(answers[-1].tokens) + answers[-1].complete
            else:
                assert len(passes) <= decoder.decoding.max_new_tokens
    finally:
        hook.remove()
    assert not all(answer.complete for answer in answers)  # some ran out of tokens


def test_the_lm_head_is_skipped_for_a_shared_prefix(random_bloom):
    """A group's shared prefix is encoded for its KV cache only: the head sees no row of that
    pass (its logits would never be read), while a prompt alone in its group is read there."""
    decoder = Decoder(random_bloom, Decoding(batch_size=8, max_new_tokens=1, jump_forward=False, speculate=False))
    head_rows = []
    hook = random_bloom.model.get_output_embeddings().register_forward_hook(
        lambda module, args, logits: head_rows.append(logits.shape[:-1].numel()))
    try:
        text = "Tim Cook visited Berlin."
        shared = [Query(build_prompt(EXTRACT, text, [label]), group=0) for label in NER_LABELS]
        decoder.decode(shared)
        assert head_rows[0] == 0 and head_rows[1] == len(shared)  # the prefix pass, then each rest
        head_rows.clear()
        decoder.decode(shared[:1])  # alone: the prompt is encoded whole and read at once
        assert head_rows[0] == 1
    finally:
        hook.remove()


def test_a_model_s_guesses_are_counted_across_its_decoders_and_its_pass_cost_is_the_device_s(taught):
    from spacy_seqgpt.models.pass_costs import PASS_OVERHEAD_TOKENS

    costs = taught.costs
    before = costs.drafted, costs.accepted
    decoders = [Decoder(taught, Decoding(batch_size=3, max_new_tokens=16)) for _ in range(2)]
    for decoder in decoders:
        decoder.decode(taught_queries(True))
    assert all(decoder.shared.costs is costs for decoder in decoders)
    assert costs.drafted - before[0] == sum(d.drafted for d in decoders) > 0
    assert costs.accepted - before[1] == sum(d.accepted for d in decoders)
    assert decoders[0].pass_overhead == PASS_OVERHEAD_TOKENS["cpu"]
    decoders[1].pass_overhead = 7  # set by hand, it wins
    assert decoders[1].pass_overhead == 7 and decoders[0].pass_overhead == PASS_OVERHEAD_TOKENS["cpu"]
