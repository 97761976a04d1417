"""``seqgpt_questions``: extractive questions (commas and colons included), with a tiny model taught the answers."""
import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.training import Example

from conftest import finetune
from spacy_seqgpt.prompts import EXTRACT, LINE_BREAKS, NONE_ANSWERS, build_prompt, format_answer, locate_spans

# (text, {question: [answers]}): the questions hold commas and colons on purpose
TAUGHT = [
    ("Steve Jobs founded Apple in Cupertino in 1976.",
     {"Who founded the company, and where?": ["Steve Jobs"], "Year: when was it founded?": ["1976"]}),
    ("Marie Curie won the Nobel Prize in Paris.",
     {"Who founded the company, and where?": [], "Which prize: name it": ["Nobel Prize"]}),
]


@pytest.fixture(scope="module")
def questions_model(tmp_path_factory, tiny_bloom):
    pairs = [(build_prompt(EXTRACT, text, [question]), format_answer(EXTRACT, {question: spans}, [question]))
             for text, asked in TAUGHT for question, spans in asked.items()]
    return str(finetune(tiny_bloom, tmp_path_factory.mktemp("questions"), pairs))


def make_nlp(model, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_questions", config={"model": model, **config})
    return nlp


def asked_doc(nlp, text, questions):
    doc = nlp.make_doc(text)
    doc._.questions = questions
    return doc


def answers(doc, key="answers"):
    return sorted((span.label_, span.text) for span in doc.spans[key])


def expected(asked, ids=None):
    return sorted(((ids or {}).get(q, q), span) for q, spans in asked.items() for span in spans)


def test_each_docs_questions_get_the_taught_spans_and_pipe_equals_single_calls(questions_model):
    nlp = make_nlp(questions_model)
    docs = list(nlp.pipe([asked_doc(nlp, text, list(asked)) for text, asked in TAUGHT]))
    for (text, asked), doc in zip(TAUGHT, docs):
        assert answers(doc) == expected(asked)
        assert answers(nlp(asked_doc(nlp, text, list(asked)))) == answers(doc)
        scores = doc.spans["answers"].attrs["scores"]
        assert len(scores) == len(doc.spans["answers"]) and all(0.0 < s <= 1.0 for s in scores)
        assert all(span.text in text for span in doc.spans["answers"])  # spans of the Doc, never invented


def test_the_span_search_keeps_the_taught_answers_and_nothing_below_the_threshold(questions_model):
    nlp = make_nlp(questions_model, threshold=0.05, decoding={"span_search": True, "max_new_tokens": 48})
    for (_, asked), doc in zip(TAUGHT, nlp.pipe([asked_doc(nlp, text, list(asked)) for text, asked in TAUGHT])):
        assert set(expected(asked)) <= set(answers(doc))
        assert all(score >= 0.05 for score in doc.spans["answers"].attrs["scores"])
    assert nlp.get_pipe("seqgpt_questions").stats["searched"] > 0


def test_questions_in_the_config_are_asked_of_every_doc_under_their_ids(questions_model, tmp_path):
    ids = {"founder": "Who founded the company, and where?"}
    nlp = make_nlp(questions_model, questions=ids, spans_key="qa")
    text, asked = TAUGHT[0]
    doc = nlp(asked_doc(nlp, text, {"year": "Year: when was it founded?"}))
    assert answers(doc, "qa") == [("founder", "Steve Jobs"), ("year", "1976")]
    nlp.to_disk(tmp_path / "pipeline")
    again = spacy.load(tmp_path / "pipeline")
    assert answers(again(again.make_doc(text)), "qa") == [("founder", "Steve Jobs")]
    fresh = make_nlp(questions_model, questions=ids, spans_key="qa")
    fresh.get_pipe("seqgpt_questions").from_bytes(nlp.get_pipe("seqgpt_questions").to_bytes())
    assert answers(fresh(fresh.make_doc(text)), "qa") == [("founder", "Steve Jobs")]


def test_the_scorer_against_hand_counts(questions_model):
    nlp = make_nlp(questions_model)
    text, asked = TAUGHT[0]
    predicted = nlp(asked_doc(nlp, text, list(asked)))  # both right
    gold = nlp.make_doc(text)
    gold.spans["answers"] = [gold.char_span(0, 10, label="Who founded the company, and where?"),
                             gold.char_span(19, 24, label="Who founded the company, and where?")]  # Apple: missed
    scores = nlp.get_pipe("seqgpt_questions").score([Example(predicted, gold)])
    # 1 of 2 predicted right, 1 of 2 gold found
    assert (scores["spans_answers_p"], scores["spans_answers_r"]) == (pytest.approx(0.5), pytest.approx(0.5))


def test_only_what_cannot_be_read_back_is_refused(questions_model):
    with pytest.raises(ValueError, match="line break"):
        make_nlp(questions_model, questions=["Who?\nWhere?"])
    nlp = make_nlp(questions_model)
    with pytest.raises(ValueError, match=r"doc\._\.questions.*empty"):
        nlp(asked_doc(nlp, "Some text.", ["  "]))
    with pytest.raises(ValueError, match="spans_key"):
        make_nlp(questions_model, spans_key=None)
    assert "answers" in nlp(nlp.make_doc("No question here.")).spans  # asked nothing: an empty group


QUESTION_CHARS = st.characters(blacklist_characters=LINE_BREAKS, blacklist_categories=("Cs",))
SPAN = st.text(st.characters(whitelist_categories=("L", "N")), min_size=1, max_size=8).filter(
    lambda span: span.casefold() not in NONE_ANSWERS)  # a span reading "None" means none, for any label


@settings(max_examples=200, deadline=None)
@given(questions=st.lists(st.text(QUESTION_CHARS, min_size=1, max_size=30).filter(str.strip), min_size=1,
                          max_size=3, unique=True),
       spans=st.lists(st.lists(SPAN, max_size=3, unique=True), min_size=3, max_size=3))
def test_answers_to_questions_with_commas_and_colons_read_back(questions, spans):
    """The answer the grammar writes (each line: the question as asked, a colon, the spans) is
    read back to the same spans, whatever the questions hold."""
    answer = {question: found for question, found in zip(questions, spans)}
    text = format_answer(EXTRACT, answer, questions)
    located = locate_spans(text, questions)
    if any(q.startswith(other) and q != other for q in questions for other in questions):
        return  # one question begins another: the longest is taken, as a reader must (skip)
    assert [(label, span) for label, span, _ in located] == [(q, s) for q in questions for s in answer[q]]
    assert all(text[at:at + len(span)] == span for _, span, at in located)
