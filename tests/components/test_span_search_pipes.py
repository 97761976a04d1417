"""The recall knob in the pipeline: ``decoding.span_search`` with a component's ``threshold``,
in seqgpt_ner, ``SeqGPT.extract`` and ``seqgpt evaluate``'s reading of answers."""
import pytest
import spacy

from conftest import CAT_LABELS, EXAMPLES, NER_LABELS, load
from spacy_seqgpt import SeqGPT
from spacy_seqgpt.data.records import make_record
from spacy_seqgpt.decoding import Decoding
from spacy_seqgpt.evaluation.predict import predict_records

TEXTS = [text for lang, text, _, _ in EXAMPLES if lang == "en"] + [
    "Angela Merkel visited Microsoft in Madrid.", "Tim met Serena in Paris, then flew to Berlin."]
DECODING = Decoding(batch_size=4, max_new_tokens=48)


def ner(model, threshold, span_search, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"model": model, "labels": NER_LABELS, "threshold": threshold,
                                       "decoding": DECODING.but(span_search=span_search).to_dict(), **config})
    return nlp


def scored(doc, key):
    group = doc.spans[key]
    return [(span.start, span.end, span.label_, score) for span, score in zip(group, group.attrs["scores"])]


@pytest.mark.parametrize("threshold", [0.5, 0.005])
def test_the_span_search_adds_to_the_spans_at_the_threshold_and_keeps_one_label_s_spans_apart(seqgpt_tiny,
                                                                                              threshold):
    greedy = ner(seqgpt_tiny, threshold, False, spans_key="found")
    search = ner(seqgpt_tiny, threshold, True, spans_key="found")
    for plain, searched in zip(greedy.pipe(TEXTS), search.pipe(TEXTS)):
        before, after = scored(plain, "found"), scored(searched, "found")
        assert all(score >= threshold for *_, score in after)
        for i, (start, end, label, _) in enumerate(after):
            for other in after[i + 1:]:
                assert other[2] != label or other[0] >= end or other[1] <= start, (plain.text, after)
        for start, end, label, score in before:  # each greedy span stays, or gives way to a likelier one
            # (a score equal to the last bits: the passes are laid out differently)
            assert any(label == other[2] and start < other[1] and other[0] < end and other[3] >= score - 1e-4
                       for other in after), (plain.text, before, after)
    assert search.get_pipe("seqgpt_ner").stats["searched"] > 0
    ents = ner(seqgpt_tiny, threshold, True)
    for doc in ents.pipe(TEXTS):  # doc.ents too, each entity at the threshold
        assert all(ent._.seqgpt_score >= threshold for ent in doc.ents)


def test_the_span_search_needs_a_threshold_above_zero_and_greedy_decoding(seqgpt_tiny):
    with pytest.raises(ValueError, match="seqgpt_ner: decoding.span_search .* threshold above 0"):
        ner(seqgpt_tiny, 0.0, True)
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="span_search"):
        nlp.add_pipe("seqgpt_ner", config={"model": seqgpt_tiny, "labels": NER_LABELS, "threshold": 0.1,
                                           "decoding": {"span_search": True, "num_beams": 2}})


def test_seqgpt_extract_takes_the_threshold_and_answers_as_the_pipeline(seqgpt_tiny):
    api = SeqGPT(seqgpt_tiny, decoding=DECODING.but(span_search=True))
    nlp = ner(seqgpt_tiny, 0.005, True, spans_key="found")
    for spans, doc in zip(api.extract(TEXTS, NER_LABELS, threshold=0.005), nlp.pipe(TEXTS)):
        assert [(s["start"], s["end"], s["label"]) for s in spans] == [
            (span.start_char, span.end_char, span.label_) for span in doc.spans["found"]]
    with pytest.raises(ValueError, match="threshold"):
        api.extract(TEXTS[:1], NER_LABELS)
    # one decoding block for every task: classification has no spans to search, and answers as ever
    plain = SeqGPT(seqgpt_tiny, decoding=DECODING)
    assert api.classify(TEXTS, CAT_LABELS) == plain.classify(TEXTS, CAT_LABELS)


@pytest.mark.parametrize("threshold", [0.5, 0.005])
def test_evaluation_reads_span_search_answers_as_the_pipeline_writes_them(seqgpt_tiny, threshold):
    records = [make_record("extract", text, NER_LABELS, {}, "x", "en") for text in TEXTS]
    decoding = DECODING.but(span_search=True)
    parsed, _ = predict_records(load(seqgpt_tiny), records, decoding, threshold=threshold)
    nlp = ner(seqgpt_tiny, threshold, True, spans_key="found")
    for answer, doc in zip(parsed, nlp.pipe(TEXTS)):
        found = {}
        for span in doc.spans["found"]:
            found.setdefault(span.label_, []).extend([span.text] if span.text not in found.get(span.label_, []) else [])
        assert {label: sorted(spans) for label, spans in answer.items() if spans} == {
            label: sorted(spans) for label, spans in found.items()}
