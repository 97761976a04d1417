import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import readable
from spacy_seqgpt.prompts import (
    CLASSIFY,
    EXTRACT,
    build_prompt,
    check_label,
    chunk_labels,
    format_answer,
    parse_answer,
    prompt_labels,
)


def test_extraction_prompt_is_the_official_string():
    expected = "输入: Tim Cook met Olaf Scholz in Berlin.\n抽取: person，organization，location\n输出: [GEN]"
    assert (
        build_prompt(EXTRACT, "Tim Cook met Olaf Scholz in Berlin.", ["person", "organization", "location"]) == expected
    )


def test_classification_prompt_is_the_official_string():
    expected = "输入: 今天的比赛很精彩\n分类: 体育，政治\n输出: [GEN]"
    assert build_prompt(CLASSIFY, "今天的比赛很精彩", ["体育", "政治"]) == expected
    assert build_prompt(CLASSIFY, "x", ["a"]).encode("utf8") == "输入: x\n分类: a\n输出: [GEN]".encode("utf8")


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="Unknown SeqGPT task 'ner'"):
        build_prompt("ner", "text", ["person"])


def test_labels_are_chunked_six_per_prompt_by_default():
    labels = [f"label{i}" for i in range(13)]
    chunks = chunk_labels(labels)
    assert [len(chunk) for chunk in chunks] == [6, 6, 1]
    assert sum(chunks, []) == labels
    assert chunk_labels(labels, 5)[0] == labels[:5]
    with pytest.raises(ValueError, match="label_chunk_size"):
        chunk_labels(labels, 0)


LABELS = ["person", "organization", "location"]


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("person: Tim Cook, Olaf Scholz\norganization: None\nlocation: Berlin",
         {"person": ["Tim Cook", "Olaf Scholz"], "organization": [], "location": ["Berlin"]}),
        # full-width separators, as Chinese answers write them
        ("person：张三，李四\nlocation：北京", {"person": ["张三", "李四"], "organization": [], "location": ["北京"]}),
        # tabs and wide gaps between spans, stray whitespace around everything
        ("  person :\tTim Cook\tOlaf Scholz  \n location:  Berlin    Paris ",
         {"person": ["Tim Cook", "Olaf Scholz"], "organization": [], "location": ["Berlin", "Paris"]}),
        # repeated lines merge, duplicates collapse, a label not asked for is ignored
        ("person: Tim Cook\nperson: Tim Cook, Angela Merkel\ndate: Monday",
         {"person": ["Tim Cook", "Angela Merkel"], "organization": [], "location": []}),
        # casing of the label, 'none' variants, empty values
        ("PERSON: none\nOrganization: Apple\nlocation:", {"person": [], "organization": ["Apple"], "location": []}),
        # colons inside the value stay in the span
        ("organization: Team: Alpha", {"person": [], "organization": ["Team: Alpha"], "location": []}),
        # truncated generation, garbage, lines without a separator
        ("person: Tim Co", {"person": ["Tim Co"], "organization": [], "location": []}),
        ("@@@ ### \n\n lorem ipsum", {"person": [], "organization": [], "location": []}),
        ("", {"person": [], "organization": [], "location": []}),
    ],
)
def test_parse_extraction_answers(answer, expected):
    assert parse_answer(EXTRACT, answer, LABELS) == expected


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("sports", ["sports"]),
        ("Sports ", ["sports"]),
        ("sports，politics", ["sports", "politics"]),
        ("politics, sports, politics", ["politics", "sports"]),
        ("分类: business", ["business"]),
        ("weather", []),
        ("None", []),
        ("", []),
        ("sports\nbusiness\nsports", ["sports", "business"]),
    ],
)
def test_parse_classification_answers(answer, expected):
    assert parse_answer(CLASSIFY, answer, ["sports", "politics", "business"]) == expected


def test_parse_answer_of_non_text_output_is_empty():
    assert parse_answer(EXTRACT, None, LABELS) == {label: [] for label in LABELS}
    assert parse_answer(CLASSIFY, 3, LABELS) == []


label_text = st.text(min_size=1, max_size=12).filter(readable)


@given(answer=st.text(max_size=300), labels=st.lists(label_text, min_size=1, max_size=6, unique=True))
def test_parsing_never_raises_and_stays_within_the_labels(answer, labels):
    extracted = parse_answer(EXTRACT, answer, labels)
    assert list(extracted) == labels
    for spans in extracted.values():
        assert len(spans) == len(set(spans))
        assert all(span and span == span.strip() for span in spans)
    chosen = parse_answer(CLASSIFY, answer, labels)
    assert set(chosen) <= set(labels) and len(chosen) == len(set(chosen))


_word = st.text(alphabet="abcXYZ019éß北京东京😀", min_size=1, max_size=8)
span_text = st.lists(_word, min_size=1, max_size=3).map(" ".join).filter(lambda s: s.casefold() != "none")
word_label = st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=6), min_size=1, max_size=2).map(" ".join)


@given(data=st.data(), labels=st.lists(word_label, min_size=1, max_size=6, unique_by=str.casefold))
def test_format_then_parse_gives_back_the_answer(data, labels):
    answer = {label: data.draw(st.lists(span_text, max_size=3, unique=True))
              for label in labels}
    assert parse_answer(EXTRACT, format_answer(EXTRACT, answer, labels), labels) == answer
    chosen = data.draw(st.lists(st.sampled_from(labels), unique=True))
    assert set(parse_answer(CLASSIFY, format_answer(CLASSIFY, chosen, labels), labels)) == set(chosen)


@pytest.mark.parametrize(
    "label,problem",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a,b", "comma"),
        ("a，b", "full-width comma"),
        ("time: start", "colon"),
        ("时间：开始", "full-width colon"),
        ("two\nlines", "line break"),
        ("a\x1cb", "line break"),
        ("a\u2029b", "line break"),
        ("a\tb", "tab"),
        ("new  york", "run of whitespace"),
        ("a\u3000 b", "run of whitespace"),
        ("'sports'", "quote"),
        ("「体育」", "quote"),
        (" person", "whitespace"),
        (3, "must be strings"),
    ],
)
def test_labels_that_cannot_be_written_are_refused(label, problem):
    with pytest.raises(ValueError, match=problem):
        check_label(label)
    with pytest.raises(ValueError, match=problem):
        prompt_labels([label] if label != 3 else {"x": 3})


@settings(max_examples=1000, deadline=None)
@given(st.text(min_size=1, max_size=10), st.text(min_size=1, max_size=10))
def test_a_label_is_accepted_only_if_answers_naming_it_read_back(label, other):
    if not readable(label):
        return
    assert parse_answer(EXTRACT, f"{label}: x", [label]) == {label: ["x"]}
    assert parse_answer(CLASSIFY, label, [label]) == [label]
    if readable(other) and other.casefold() != label.casefold():
        assert parse_answer(CLASSIFY, f"{other}，{label}", [label, other]) == [other, label]
        assert parse_answer(EXTRACT, f"{label}: None\n{other}: y, z", [label, other]) == {label: [], other: ["y", "z"]}


def test_label_specs():
    assert prompt_labels(["person", "location"]) == {"person": "person", "location": "location"}
    assert prompt_labels({"PER": "person", "LOC": "location"}) == {"PER": "person", "LOC": "location"}
    with pytest.raises(ValueError, match="no labels given"):
        prompt_labels([])
    with pytest.raises(ValueError, match="must be a list"):
        prompt_labels("person,location")
    with pytest.raises(ValueError, match="given twice"):
        prompt_labels(["person", "person"])
    with pytest.raises(ValueError, match="both written as"):
        prompt_labels({"PER": "person", "PERSON": "Person"})
