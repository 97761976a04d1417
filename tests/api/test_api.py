"""``SeqGPT(model)``: extraction and classification of plain strings with the tiny taught model."""
import pytest

from conftest import CAT_LABELS, EXAMPLES, NER_LABELS, expected_ents
from spacy_seqgpt import SeqGPT

ENGLISH = [example for example in EXAMPLES if example[0] == "en"]
TEXTS = [text for _, text, _, _ in ENGLISH]


@pytest.fixture(scope="module")
def seqgpt(seqgpt_tiny):
    return SeqGPT(str(seqgpt_tiny), decoding={"batch_size": 4})


def test_extract_gives_the_taught_spans_with_offsets_and_scores(seqgpt):
    results = seqgpt.extract(TEXTS, NER_LABELS)
    for (_, text, entities, _), spans in zip(ENGLISH, results):
        assert sorted((s["start"], s["end"], s["label"]) for s in spans) == expected_ents(text, entities)
        assert all(text[s["start"]:s["end"]] == s["text"] and 0 < s["score"] <= 1 for s in spans)
    alone = [seqgpt.extract([text], NER_LABELS)[0] for text in TEXTS[:2]]  # batching changes nothing
    assert [[{**s, "score": pytest.approx(s["score"], abs=1e-5)} for s in spans] for spans in results[:2]] == alone


def test_classify_gives_the_taught_categories(seqgpt):
    cats = seqgpt.classify(TEXTS, CAT_LABELS)
    assert cats == [{label: float(label == category) for label in CAT_LABELS} for _, _, _, category in ENGLISH]
    scored = seqgpt.classify(TEXTS, CAT_LABELS, probabilities=True)
    assert [max(c, key=c.get) for c in scored] == [category for _, _, _, category in ENGLISH]
    assert all(sum(c.values()) == pytest.approx(1.0, abs=1e-4) for c in scored)
    shared = {nlp.pipeline[0][1].shared for nlp in seqgpt._pipelines.values()}
    assert len(seqgpt._pipelines) >= 2 and len(shared) == 1  # one loaded model for every label set


def test_pairs_are_classified_as_their_joined_text(seqgpt):
    firsts, seconds = ["Tim Cook met Olaf Scholz", "The bank"], ["in Berlin.", "raised rates again."]
    joined = [SeqGPT.pair_text(a, b) for a, b in zip(firsts, seconds)]
    assert joined[0] == "Premise: Tim Cook met Olaf Scholz Hypothesis: in Berlin."
    assert SeqGPT.pair_text("a {second} b", "c") == "Premise: a {second} b Hypothesis: c"  # no substitution into a text
    assert seqgpt.classify_pairs(firsts, seconds, CAT_LABELS, probabilities=True) == \
        seqgpt.classify(joined, CAT_LABELS, probabilities=True)
    own = seqgpt.classify_pairs(firsts, seconds, CAT_LABELS, template="{first} {second}")
    assert own == seqgpt.classify([f"{a} {b}" for a, b in zip(firsts, seconds)], CAT_LABELS)


def test_bad_input_is_named(seqgpt):
    with pytest.raises(TypeError, match="one string"):
        seqgpt.extract("Tim Cook", NER_LABELS)
    with pytest.raises(TypeError, match=r"labels must be a list of strings, got one string: .*\['person'\]"):
        seqgpt.extract(["Tim Cook"], "person")  # not six one-letter labels
    with pytest.raises(TypeError, match="labels must be a list"):
        seqgpt.classify(["Tim Cook"], "sports")
    with pytest.raises(TypeError, match=r"items \[1\] are int"):
        seqgpt.classify(["fine", 3], CAT_LABELS)
    with pytest.raises(ValueError, match=r"texts\[1\] holds a lone surrogate \(U\+DCFF at character 4\)"):
        seqgpt.extract(["fine", "bad \udcff text"], NER_LABELS)
    with pytest.raises(ValueError, match="as many first texts"):
        seqgpt.classify_pairs(["a", "b"], ["c"], CAT_LABELS)
    with pytest.raises(ValueError, match="must be one line holding"):
        seqgpt.classify_pairs(["a"], ["c"], CAT_LABELS, template="{first}")
    with pytest.raises(ValueError):  # the component's own check of labels
        seqgpt.extract(["text"], ["bad\nlabel"])
