"""``seqgpt_events``: triggers, confirmed types and arguments, with a tiny model taught the answers."""
import pytest
import spacy
from spacy.training import Example

from conftest import finetune
from spacy_seqgpt.templates import (
    ARGUMENT_TEMPLATE,
    EVENT_TYPE_TEMPLATE as TYPE_TEMPLATE,
    TRIGGER_TEMPLATE,
    fill_template,
)
from spacy_seqgpt.prompts import CLASSIFY, EXTRACT, build_prompt, format_answer

TYPES = ["Attack", "Transport"]
ROLES = {"Attack": ["attacker", "target"], "Transport": ["destination"]}
# (text, {type: [triggers]}, {trigger: {role: [spans]}})
TAUGHT = [
    ("Rebels attacked the convoy and then travelled to Kabul.", {"Attack": ["attacked"], "Transport": ["travelled"]},
     {"attacked": {"attacker": ["Rebels"], "target": ["convoy"]}, "travelled": {"destination": ["Kabul"]}}),
    ("The ship sailed to Lisbon.", {"Attack": [], "Transport": ["sailed"]}, {"sailed": {"destination": ["Lisbon"]}}),
]


def teaching_pairs():
    trigger_queries = [fill_template(TRIGGER_TEMPLATE, type=t) for t in TYPES]
    pairs = []
    for text, triggers, arguments in TAUGHT:
        pairs.append((build_prompt(EXTRACT, text, trigger_queries),
                      format_answer(EXTRACT, {fill_template(TRIGGER_TEMPLATE, type=t): s for t, s in triggers.items()},
                                    trigger_queries)))
        for event_type, found in triggers.items():
            for trigger in found:
                question = fill_template(TYPE_TEMPLATE, trigger=trigger, text=text)
                pairs.append((build_prompt(CLASSIFY, question, TYPES), format_answer(CLASSIFY, [event_type], TYPES)))
                queries = {fill_template(ARGUMENT_TEMPLATE, role=r, trigger=trigger): r for r in ROLES[event_type]}
                pairs.append((build_prompt(EXTRACT, text, list(queries)),
                              format_answer(EXTRACT, {q: arguments[trigger].get(r, []) for q, r in queries.items()},
                                            list(queries))))
    return pairs


@pytest.fixture(scope="module")
def events_model(tmp_path_factory, tiny_bloom):
    return str(finetune(tiny_bloom, tmp_path_factory.mktemp("events"), teaching_pairs()))


def make_nlp(model, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_events", config={"labels": TYPES, "roles": ROLES, "model": model, **config})
    return nlp


def events_of(doc):
    return [(e["trigger"].text, e["type"], {role: [s.text for s in spans] for role, spans in e["arguments"].items()})
            for e in doc._.events]


def expected(triggers, arguments):
    found = [(trigger, event_type) for event_type, spans in triggers.items() for trigger in spans]
    return [(trigger, event_type, arguments[trigger]) for trigger, event_type in found]


@pytest.fixture(scope="module")
def nlp(events_model):
    return make_nlp(events_model)


def by_position(events, text):
    return sorted(events, key=lambda event: text.index(event[0]))


def test_triggers_types_and_arguments_are_the_taught_ones_and_pipe_equals_single_calls(nlp):
    docs = list(nlp.pipe(nlp.make_doc(text) for text, _, _ in TAUGHT))
    for (text, triggers, arguments), doc in zip(TAUGHT, docs):
        assert events_of(doc) == by_position(expected(triggers, arguments), text)
        assert events_of(nlp(text)) == events_of(doc)
        scores = doc.spans["events"].attrs["scores"] + doc.spans["events_arguments"].attrs["scores"]
        assert all(0.0 < score <= 1.0 for score in scores)


def test_the_span_search_finds_triggers_and_arguments_at_the_threshold(events_model):
    """The search runs for triggers and for arguments: the taught events stay, nothing is below the threshold."""
    searching = make_nlp(events_model, threshold=0.05, decoding={"span_search": True, "max_new_tokens": 48})
    for (_, triggers, arguments), doc in zip(TAUGHT, searching.pipe(text for text, _, _ in TAUGHT)):
        got = events_of(doc)
        for event in expected(triggers, arguments):
            assert event in got
        scores = doc.spans["events"].attrs["scores"] + doc.spans["events_arguments"].attrs["scores"]
        assert all(score >= 0.05 for score in scores)
    assert searching.get_pipe("seqgpt_events").stats["searched"] > 0
    with pytest.raises(ValueError, match="threshold above 0"):
        make_nlp(events_model, decoding={"span_search": True})


def test_confirmation_asks_the_type_question(events_model):
    confirming = make_nlp(events_model, confirm=True)
    text, triggers, arguments = TAUGHT[0]
    assert events_of(confirming(text)) == by_position(expected(triggers, arguments), text)
    assert confirming.get_pipe("seqgpt_events").stats["unconfirmed"] == 0
    # a type question whose wording the model never saw: its answers need not confirm, and what is
    # not confirmed is dropped and counted, never relabelled
    strict = make_nlp(events_model, confirm=True, templates={"event_type": "which type is {trigger}, in {text}"})
    kept = strict(text)._.events
    assert len(kept) + strict.get_pipe("seqgpt_events").stats["unconfirmed"] == 2
    assert {(e["trigger"].text, e["type"]) for e in kept} <= {("attacked", "Attack"), ("travelled", "Transport")}


def test_round_trips_keep_the_output(nlp, tmp_path):
    text = TAUGHT[1][0]
    nlp.to_disk(tmp_path / "pipeline")
    again = spacy.load(tmp_path / "pipeline")
    assert events_of(again(text)) == events_of(nlp(text))
    fresh = make_nlp(nlp.get_pipe("seqgpt_events").spec.name)
    fresh.get_pipe("seqgpt_events").from_bytes(nlp.get_pipe("seqgpt_events").to_bytes())
    assert events_of(fresh(text)) == events_of(nlp(text))
    from spacy.tokens import DocBin  # the events live in span groups, which DocBins keep

    doc = nlp(text)
    restored = next(DocBin(docs=[doc]).from_bytes(DocBin(docs=[doc]).to_bytes()).get_docs(nlp.vocab))
    assert events_of(restored) == events_of(doc)


def test_the_scorer_against_hand_counts(nlp):
    text, triggers, arguments = TAUGHT[0]
    predicted = nlp(text)
    gold = nlp.make_doc(text)
    gold.spans["events"] = [gold.char_span(7, 15, label="Attack")]  # "travelled" is not gold: 1 of 2 right
    gold.spans["events_arguments"] = [
        gold.char_span(0, 6, label="attacker"),
        gold.char_span(20, 26, label="target"),
        gold.char_span(49, 54, label="destination"),
        gold.char_span(20, 26, label="attacker"),
    ]
    scores = nlp.get_pipe("seqgpt_events").score([Example(predicted, gold)])
    assert (scores["spans_events_p"], scores["spans_events_r"]) == (pytest.approx(0.5), pytest.approx(1.0))
    assert (scores["spans_events_arguments_p"], scores["spans_events_arguments_r"]) == (
        pytest.approx(1.0), pytest.approx(0.75))


def test_bad_settings_are_named(events_model):
    with pytest.raises(ValueError, match="not among the labels"):
        make_nlp(events_model, roles={"Election": ["winner"]})
    with pytest.raises(ValueError, match=r"'templates.argument' must be one line holding \{role\}, \{trigger\}"):
        make_nlp(events_model, templates={"argument": "{role} only"})
    with pytest.raises(ValueError, match="comma"):
        make_nlp(events_model, labels=["Attack, armed"])
