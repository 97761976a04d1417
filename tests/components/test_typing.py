"""``seqgpt_typing``: types for spans already on the Doc, with a tiny model taught the answers."""
import pytest
import spacy
from spacy.tokens import Span
from spacy.training import Example

from conftest import finetune
from spacy_seqgpt.templates import TYPING_TEMPLATE as DEFAULT_TEMPLATE
from spacy_seqgpt.prompts import CLASSIFY, build_prompt, format_answer

TYPES = ["politician", "athlete", "company", "city"]
# (text, [(span text, taught type)])
TAUGHT = [
    ("Olaf Scholz met Serena Williams in Berlin.", [("Olaf Scholz", "politician"), ("Serena Williams", "athlete"),
                                                    ("Berlin", "city")]),
    ("Apple opened an office in Paris.", [("Apple", "company"), ("Paris", "city")]),
]


def question(span, text):
    return DEFAULT_TEMPLATE.replace("{span}", span).replace("{text}", text)


@pytest.fixture(scope="module")
def typing_model(tmp_path_factory, tiny_bloom):
    pairs = [(build_prompt(CLASSIFY, question(span, text), TYPES), format_answer(CLASSIFY, [label], TYPES))
             for text, spans in TAUGHT for span, label in spans]
    return str(finetune(tiny_bloom, tmp_path_factory.mktemp("typing"), pairs))


def make_nlp(model, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_typing", config={"labels": TYPES, "model": model, **config})
    return nlp


def with_spans(nlp, text, spans, key=None, label="ENT"):
    """A Doc of ``text`` with the spans to type as entities (or in ``doc.spans[key]``)."""
    doc = nlp.make_doc(text)
    found = [doc.char_span(text.index(span), text.index(span) + len(span), label=label) for span, _ in spans]
    if key is None:
        doc.ents = found
    else:
        doc.spans[key] = found
    return doc


def typed(group):
    return [(span.text, span.label_) for span in group]


@pytest.fixture(scope="module")
def nlp(typing_model):
    return make_nlp(typing_model)


def test_entities_get_the_taught_types_and_pipe_equals_single_calls(nlp):
    docs = [with_spans(nlp, text, spans) for text, spans in TAUGHT]
    piped = list(nlp.pipe(docs))
    for (text, spans), doc in zip(TAUGHT, piped):
        assert typed(doc.ents) == spans
        assert [span._.seqgpt_score for span in doc.ents] == [1.0] * len(spans)
        assert typed(nlp(with_spans(nlp, text, spans)).ents) == spans


def test_a_span_group_and_scored_types(typing_model):
    nlp = make_nlp(typing_model, input_key="candidates", probabilities=True)
    text, spans = TAUGHT[0]
    doc = nlp(with_spans(nlp, text, spans, key="candidates"))
    assert typed(doc.spans["candidates"]) == spans and not doc.ents
    assert all(0.5 < score <= 1.0 for score in doc.spans["candidates"].attrs["scores"])


def test_multi_label_types_go_to_their_own_group(typing_model):
    nlp = make_nlp(typing_model, multi_label=True, probabilities=True, spans_key="seqgpt_types")
    text, spans = TAUGHT[0]
    doc = nlp(with_spans(nlp, text, spans))
    assert set(spans) <= set(typed(doc.spans["seqgpt_types"])) and typed(doc.ents) == [(s, "ENT") for s, _ in spans]
    assert len(doc.spans["seqgpt_types"].attrs["scores"]) == len(doc.spans["seqgpt_types"])
    assert all(score >= 0.5 for score in doc.spans["seqgpt_types"].attrs["scores"])


def test_round_trips_keep_the_output(nlp, tmp_path):
    text, spans = TAUGHT[1]
    nlp.to_disk(tmp_path / "pipeline")
    for again in (spacy.load(tmp_path / "pipeline"), make_nlp(nlp.get_pipe("seqgpt_typing").spec.name)):
        again.get_pipe("seqgpt_typing").from_bytes(nlp.get_pipe("seqgpt_typing").to_bytes())
        assert typed(again(with_spans(again, text, spans)).ents) == spans


def test_the_scorer_counts_typed_spans(nlp):
    text, spans = TAUGHT[0]
    gold = with_spans(nlp, text, spans)
    gold.ents = [Span(gold, s.start, s.end, label=label) for s, (_, label) in zip(gold.ents, spans)]
    predicted = with_spans(nlp, text, spans)
    predicted.ents = [Span(predicted, s.start, s.end, label=label) for s, label in
                      zip(predicted.ents, ["politician", "politician", "city"])]  # one of three wrong
    scores = nlp.get_pipe("seqgpt_typing").score([Example(predicted, gold)])
    assert scores["typing_p"] == pytest.approx(2 / 3) and scores["typing_r"] == pytest.approx(2 / 3)
    assert scores["typing_per_type"]["athlete"]["r"] == 0.0 and scores["typing_per_type"]["city"]["f"] == 1.0


def test_bad_settings_and_spans_no_window_holds(typing_model):
    with pytest.raises(ValueError, match="must be one line holding"):
        make_nlp(typing_model, template="type of {span}")
    with pytest.raises(ValueError, match="'spans_key' must be a non-empty doc.spans key"):
        make_nlp(typing_model, multi_label=True)
    # 0.1's spans_key named the spans read: it would have overwritten them with their types
    with pytest.raises(ValueError, match="spans_key' is where multi-label typing writes.*set input_key = 'cands'"):
        make_nlp(typing_model, spans_key="cands")
    nlp = make_nlp(typing_model, decoding={"max_input_tokens": 4})
    text = "Serena Williams won the final of the tournament in New York yesterday."
    doc = nlp(with_spans(nlp, text, [("the final of the tournament in New York", None)]))
    assert nlp.get_pipe("seqgpt_typing").stats["over_window"] == 1 and typed(doc.ents)[0][1] == "ENT"
