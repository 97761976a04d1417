"""``seqgpt_rel``: relations between spans on the Doc, with a tiny model taught the answers."""
from itertools import permutations

import pytest
import spacy
from spacy.training import Example

from conftest import finetune
from spacy_seqgpt.templates import NO_RELATION, RELATION_TEMPLATE as DEFAULT_TEMPLATE
from spacy_seqgpt.text.relations import relation_triples
from spacy_seqgpt.prompts import CLASSIFY, build_prompt, format_answer

RELATIONS = ["works for", "based in", "leader of"]
# (text, entity texts, {(head, tail): relation}); every other ordered pair: no relation
TAUGHT = [
    ("Tim Cook works for Apple in Cupertino .", ["Tim Cook", "Apple", "Cupertino"],
     {("Tim Cook", "Apple"): "works for", ("Apple", "Cupertino"): "based in"}),
    ("Olaf Scholz leads Germany .", ["Olaf Scholz", "Germany"], {("Olaf Scholz", "Germany"): "leader of"}),
]


def question(head, tail, text):
    return DEFAULT_TEMPLATE.replace("{head}", head).replace("{tail}", tail).replace("{text}", text)


@pytest.fixture(scope="module")
def rel_model(tmp_path_factory, tiny_bloom):
    answers = RELATIONS + [NO_RELATION]
    pairs = [(build_prompt(CLASSIFY, question(h, t, text), answers),
              format_answer(CLASSIFY, [relations.get((h, t), NO_RELATION)], answers))
             for text, spans, relations in TAUGHT for h, t in permutations(spans, 2)]
    return str(finetune(tiny_bloom, tmp_path_factory.mktemp("rel"), pairs))


def make_nlp(model, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_rel", config={"labels": RELATIONS, "model": model, **config})
    return nlp


def with_ents(nlp, text, spans):
    doc = nlp.make_doc(text)
    doc.ents = [doc.char_span(text.index(span), text.index(span) + len(span), label="ENT") for span in spans]
    return doc


def key(doc, head, tail):
    """``doc._.rel``'s key of the pair of entities named ``head`` and ``tail``."""
    spans = {e.text: e for e in doc.ents}
    return spans[head].start, spans[head].end, spans[tail].start, spans[tail].end


def expected(doc, relations):
    """Every ordered pair asked, with the taught relation (scored 1.0) where there is one: labels
    below the threshold are not written."""
    names = [e.text for e in doc.ents]
    return {key(doc, h, t): ({relations[h, t]: 1.0} if (h, t) in relations else {})
            for h, t in permutations(names, 2)}


@pytest.fixture(scope="module")
def nlp(rel_model):
    return make_nlp(rel_model)


def test_every_ordered_pair_gets_the_taught_relation_and_pipe_equals_single_calls(nlp):
    docs = list(nlp.pipe([with_ents(nlp, text, spans) for text, spans, _ in TAUGHT]))
    for (text, spans, relations), doc in zip(TAUGHT, docs):
        assert doc._.rel == expected(doc, relations)
        assert nlp(with_ents(nlp, text, spans))._.rel == doc._.rel


def test_scored_relations_are_probabilities(rel_model):
    nlp = make_nlp(rel_model, probabilities=True, threshold=0.0)
    text, spans, relations = TAUGHT[0]
    doc = nlp(with_ents(nlp, text, spans))
    assert max(doc._.rel[key(doc, "Tim Cook", "Apple")].items(), key=lambda kv: kv[1])[0] == "works for"
    assert all(0.0 <= sum(scores.values()) <= 1.0 + 1e-6 for scores in doc._.rel.values())


def test_the_pair_cap_and_distance_are_counted(rel_model):
    text, spans, _ = TAUGHT[0]
    capped = make_nlp(rel_model, candidates={"max_pairs": 2})
    doc = capped(with_ents(capped, text, spans))
    assert len(doc._.rel) == 2 and capped.get_pipe("seqgpt_rel").stats["pairs_capped"] == 4
    near = make_nlp(rel_model, candidates={"max_distance": 2})  # Tim Cook .. Cupertino are 4 tokens apart
    doc = near(with_ents(near, text, spans))
    assert sorted(doc._.rel) == [(0, 2, 4, 5), (4, 5, 0, 2), (4, 5, 6, 7), (6, 7, 4, 5)]


def test_round_trips_keep_the_output(nlp, tmp_path):
    text, spans, relations = TAUGHT[1]
    nlp.to_disk(tmp_path / "pipeline")
    again = spacy.load(tmp_path / "pipeline")
    doc = again(with_ents(again, text, spans))
    assert doc._.rel == expected(doc, relations)
    fresh = make_nlp(nlp.get_pipe("seqgpt_rel").spec.name)
    fresh.get_pipe("seqgpt_rel").from_bytes(nlp.get_pipe("seqgpt_rel").to_bytes())
    assert fresh(with_ents(fresh, text, spans))._.rel == doc._.rel


def test_the_scorer_against_hand_counted_triples(nlp):
    text, spans, relations = TAUGHT[0]
    gold = with_ents(nlp, text, spans)
    gold._.rel = expected(gold, relations)  # 2 relations
    predicted = with_ents(nlp, text, spans)
    predicted._.rel = {(0, 2, 4, 5): {"works for": 0.9, "based in": 0.1, "leader of": 0.0},  # right
                       (4, 5, 6, 7): {"works for": 0.6, "based in": 0.3, "leader of": 0.0},  # wrong label
                       (6, 7, 0, 2): {"works for": 0.0, "based in": 0.0, "leader of": 0.7}}  # none in gold
    scores = nlp.get_pipe("seqgpt_rel").score([Example(predicted, gold)])
    assert scores == {"rel_micro_p": pytest.approx(1 / 3), "rel_micro_r": pytest.approx(1 / 2),
                      "rel_micro_f": pytest.approx(0.4)}
    assert relation_triples(predicted._.rel, 0.5) == {(0, 2, 4, 5, "works for"), (4, 5, 6, 7, "works for"),
                                                      (6, 7, 0, 2, "leader of")}
    # gold keyed as spaCy's relation-extraction project keys it (start tokens of doc.ents) scores the same
    gold._.rel = {(start, tail_start): scores for (start, _, tail_start, _), scores in gold._.rel.items()}
    assert nlp.get_pipe("seqgpt_rel").score([Example(predicted, gold)]) == scores


def test_bad_settings_are_named(rel_model):
    with pytest.raises(ValueError, match="also a relation label"):
        make_nlp(rel_model, no_relation="works for")
    with pytest.raises(ValueError, match="'max_pairs' must be a positive integer, got -1"):
        make_nlp(rel_model, candidates={"max_pairs": -1})
    with pytest.raises(ValueError, match="'max_distance' must be a whole number of 0 or more, got -3"):
        make_nlp(rel_model, candidates={"max_distance": -3})
    with pytest.raises(ValueError, match=r"\{tail\}"):
        make_nlp(rel_model, template="{head} in {text}")


@pytest.mark.slow  # spacy evaluate in a subprocess
def test_spacy_evaluate_scores_relations_on_a_docbin_of_gold_rel(rel_model, tmp_path):
    """`spacy evaluate` reads the gold `doc._.rel` of a DocBin (saved with store_user_data) and
    the pipeline's entities come from a rule-based entity ruler before seqgpt_rel."""
    import subprocess
    import sys

    import srsly
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(
        [{"label": "ENT", "pattern": span} for _, spans, _ in TAUGHT for span in spans])
    nlp.add_pipe("seqgpt_rel", config={"labels": RELATIONS, "model": rel_model})
    nlp.to_disk(tmp_path / "pipeline")
    gold_docs = []
    for number, (text, spans, relations) in enumerate(TAUGHT):
        doc = with_ents(nlp, text, spans)
        gold = expected(doc, relations)
        if number == 0:  # a gold relation the model was not taught: one false negative
            gold[key(doc, "Cupertino", "Tim Cook")]["leader of"] = 1.0
        doc._.rel = gold
        gold_docs.append(doc)
    DocBin(docs=gold_docs, store_user_data=True).to_disk(tmp_path / "dev.spacy")
    result = subprocess.run([sys.executable, "-m", "spacy", "evaluate", str(tmp_path / "pipeline"),
                             str(tmp_path / "dev.spacy"), "--output", str(tmp_path / "metrics.json")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    metrics = srsly.read_json(tmp_path / "metrics.json")
    # 3 taught relations predicted, 4 gold: P = 1, R = 3/4
    assert metrics["rel_micro_p"] == pytest.approx(1.0) and metrics["rel_micro_r"] == pytest.approx(0.75)
    assert metrics["rel_micro_f"] == pytest.approx(2 * 0.75 / 1.75)


def test_overlapping_candidates_keep_every_asked_pair_apart(rel_model, tmp_path):
    """``Tim`` and ``Tim Cook`` start on one token: keyed by span bounds, each of the 6 asked pairs
    keeps its own entry (none a self-pair), and the JSON output names the right spans."""
    from spacy.tokens import Span, SpanGroup

    from spacy_seqgpt.annotation.shards import doc_json

    nlp = make_nlp(rel_model, input_key="candidates")
    text = "Tim Cook works for Apple in Cupertino ."
    doc = nlp.make_doc(text)
    doc.spans["candidates"] = SpanGroup(doc, spans=[Span(doc, 0, 1, "ENT"), Span(doc, 0, 2, "ENT"),
                                                    Span(doc, 4, 5, "ENT")])
    doc = nlp(doc)
    assert sorted(doc._.rel) == sorted([(0, 1, 0, 2), (0, 2, 0, 1), (0, 1, 4, 5), (4, 5, 0, 1),
                                        (0, 2, 4, 5), (4, 5, 0, 2)])
    assert doc._.rel[0, 2, 4, 5] == {"works for": 1.0}
    rows = {(tuple(r["head"]), tuple(r["tail"])): r["scores"] for r in doc_json(doc)["rel"]}
    assert len(rows) == 6 and rows[(0, 8), (19, 24)] == doc._.rel[0, 2, 4, 5]
    assert all(head != tail for head, tail in rows)


def test_any_batch_size_gives_the_same_relations_and_scores_within_float_tolerance(rel_model):
    """docs/components.md: "the same Docs" are the same relations; scores agree to about 1e-6."""
    found = []
    for batch_size in (1, 3):
        nlp = make_nlp(rel_model, probabilities=True, decoding={"batch_size": batch_size})
        docs = list(nlp.pipe([with_ents(nlp, text, spans) for text, spans, _ in TAUGHT]))
        found.append([dict(doc._.rel) for doc in docs])
    for one, three in zip(*found):
        assert one.keys() == three.keys()
        assert all(one[pair].keys() == three[pair].keys() for pair in one)
        assert all(one[pair][label] == pytest.approx(three[pair][label], abs=1e-5) for pair in one
                   for label in one[pair])


def test_spans_with_the_same_bounds_are_one_candidate_and_counted(rel_model):
    from spacy.tokens import Span

    nlp = make_nlp(rel_model, input_key="candidates")
    doc = nlp.make_doc("Tim Cook works for Apple in Cupertino .")
    doc.spans["candidates"] = [Span(doc, 0, 2, "PER"), Span(doc, 4, 5, "ORG"), Span(doc, 4, 5, "PRODUCT")]
    doc = nlp(doc)
    assert sorted(doc._.rel) == [(0, 2, 4, 5), (4, 5, 0, 2)]
    assert nlp.get_pipe("seqgpt_rel").stats["merged_spans"] == 1


def test_the_threshold_filters_what_is_written(rel_model):
    text, spans, _ = TAUGHT[0]
    loose, strict = make_nlp(rel_model, probabilities=True, threshold=0.0), make_nlp(rel_model, probabilities=True)
    every = loose(with_ents(loose, text, spans))._.rel
    kept = strict(with_ents(strict, text, spans))._.rel
    assert kept == {pair: {label: score for label, score in scores.items() if score >= 0.5}
                    for pair, scores in every.items()}
    assert sum(map(len, kept.values())) < sum(map(len, every.values()))
