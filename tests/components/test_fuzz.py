"""The components over random Unicode texts (empty and whitespace-only among them) and odd label
sets: never a crash, and output that is well formed whatever the model says."""
import pytest
import spacy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import load, readable


TEXTS = st.one_of(st.text(max_size=80), st.sampled_from(["", " ", "\n\t\u3000 ", "\u2028", "null None none",
                                                          "Ünïcödé  spaces\u00a0and\x1cseparators, ，:"]))
LABELS = st.lists(st.text(min_size=1, max_size=10).filter(readable), min_size=1, max_size=4,
                  unique_by=str.casefold)


@pytest.fixture(scope="module")
def model(tiny_llama):
    shared = load(tiny_llama)  # kept alive for the module: every example reuses the one copy
    yield tiny_llama, shared


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, min_size=1, max_size=4), ner_labels=LABELS, cat_labels=LABELS,
       constrained=st.booleans(), probabilities=st.booleans(), mode=st.sampled_from(["strict", "contract", "expand"]),
       spans_key=st.sampled_from([None, "sc"]))
def test_components_never_crash_on_random_text_and_labels(model, texts, ner_labels, cat_labels, constrained,
                                                          probabilities, mode, spans_key):
    path, _ = model
    nlp = spacy.blank("xx")
    nlp.add_pipe("seqgpt_ner", config={"labels": ner_labels, "model": path, "alignment_mode": mode,
                                       "spans_key": spans_key, "label_chunk_size": 2,
                                       "decoding": {"max_new_tokens": 12, "constrained": constrained,
                                                    "max_input_tokens": 16}})
    nlp.add_pipe("seqgpt_textcat", config={"labels": cat_labels, "model": path, "probabilities": probabilities,
                                           "multi_label": probabilities, "decoding": {"max_new_tokens": 8,
                                                                                "constrained": constrained}})
    for text, doc in zip(texts, nlp.pipe(texts, batch_size=3)):
        assert doc.text == text
        spans = list(doc.spans[spans_key]) if spans_key else list(doc.ents)
        assert all(span.label_ in ner_labels and 0 <= span.start < span.end <= len(doc) for span in spans)
        assert set(doc.cats) == set(cat_labels) and all(0.0 <= value <= 1.0 for value in doc.cats.values())
