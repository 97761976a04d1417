"""Relation corpora as atomic-task records (CrossRE JSON lines, DocBins with doc._.rel), and
relation triple F1 checked against a computation straight from CrossRE's files."""
import json
import random
from itertools import permutations

import pytest
from spacy.tokens import DocBin

from conftest import DATASETS
from spacy_seqgpt.data.readers import read_corpora, read_corpus
from spacy_seqgpt.data.relations import read_crossre
from spacy_seqgpt.data.sampling import corpus_records
from spacy_seqgpt.evaluation.metrics import score_records, summarize, triple_f1
from spacy_seqgpt.templates import NO_RELATION

# Two sentences of our own in CrossRE's format (token offsets inclusive).
ROWS = [
    {"doc_key": "t-1", "sentence": ["Ada", "Lovelace", "worked", "with", "Charles", "Babbage", "in", "London", "."],
     "ner": [[0, 1, "person"], [4, 5, "person"], [7, 7, "location"]],
     "relations": [[0, 1, 4, 5, "social", "", False, False], [0, 1, 7, 7, "physical", "", False, False],
                   [0, 1, 4, 5, "related-to", "", False, False]]},
    {"doc_key": "t-2", "sentence": ["Python", "is", "a", "programming", "language", "."],
     "ner": [[0, 0, "programlang"]], "relations": []},
]


def write_crossre(path, rows=ROWS):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf8")
    return path


def test_crossre_gives_entity_records_and_a_pair_record_per_ordered_pair(tmp_path):
    path = write_crossre(tmp_path / "news-test.json")
    entities, pairs = read_corpora(path)
    assert (entities.task, pairs.task) == ("extract", "classify")
    ent_records = corpus_records(entities, "crossre-news", all_labels=True)
    assert ent_records[0]["answer"] == {"person": ["Ada Lovelace", "Charles Babbage"], "location": ["London"],
                                        "programming language": []}
    pair_records = corpus_records(pairs, "crossre-news", all_labels=True)
    assert len(pair_records) == 6  # 3 x 2 ordered pairs in the first sentence, none in the second
    assert pairs.labels[-1] == NO_RELATION and "general affiliation" in pairs.labels  # every CrossRE type asked
    answers = {(r["text"][slice(*r["pair"]["head"])], r["text"][slice(*r["pair"]["tail"])]): r["answer"]
               for r in pair_records}
    assert answers == {("Ada Lovelace", "Charles Babbage"): ["related to", "social"],
                       ("Ada Lovelace", "London"): ["physical"],
                       ("Charles Babbage", "Ada Lovelace"): [NO_RELATION], ("Charles Babbage", "London"): [NO_RELATION],
                       ("London", "Ada Lovelace"): [NO_RELATION], ("London", "Charles Babbage"): [NO_RELATION]}
    first = pair_records[0]
    assert first["text"].startswith("what is the relation between ") and first["text"].endswith(
        "in Ada Lovelace worked with Charles Babbage in London .")
    with pytest.raises(ValueError, match="read_corpora"):
        read_corpus(path)


def test_training_records_keep_the_quota_and_always_ask_the_gold_answer(tmp_path):
    _, pairs = read_corpora(write_crossre(tmp_path / "news-train.json"))
    records = corpus_records(pairs, "crossre-news", quota=2, max_negatives=3, seed=1)
    assert sum(NO_RELATION in r["answer"] for r in records) <= 2
    for record in records:
        assert record["answer"] and set(record["answer"]) <= set(record["labels"])


def test_a_docbin_with_rel_gives_the_same_records_as_crossre(tmp_path):
    docs = read_crossre(write_crossre(tmp_path / "news-dev.json"))
    DocBin(docs=docs, store_user_data=True).to_disk(tmp_path / "rel.spacy")
    from_docbin = [r for c in read_corpora(tmp_path / "rel.spacy") for r in corpus_records(c, "s", all_labels=True)]
    from_json = [r for c in read_corpora(tmp_path / "news-dev.json") for r in corpus_records(c, "s", all_labels=True)]
    # the DocBin knows only the relation labels its Docs use, CrossRE's reader all 17
    for a, b in zip(from_docbin, from_json):
        assert (a["text"], set(a["answer"]), a.get("pair")) == (b["text"], set(b["answer"]), b.get("pair"))
    assert len(from_docbin) == len(from_json)


def test_bad_crossre_lines_are_named(tmp_path):
    bad = dict(ROWS[0], relations=[[0, 0, 4, 5, "social", "", False, False]])  # head [0, 0] is no entity
    with pytest.raises(ValueError, match=r"bad.json:1: relation argument \[0, 0\]"):
        read_corpora(write_crossre(tmp_path / "bad.json", [bad]), "crossre")
    (tmp_path / "worse.json").write_text('{"sentence": ["a"]}\n', encoding="utf8")
    with pytest.raises(ValueError, match="worse.json:1: expected CrossRE"):
        read_corpora(tmp_path / "worse.json", "crossre")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000 + "\n", encoding="utf8")
    with pytest.raises(ValueError, match="deep.json:1: JSON nested too deeply to read"):
        read_corpora(tmp_path / "deep.json", "crossre")


@pytest.mark.parametrize("change, message", [
    ({"relations": [[0, 1, 4, 5, 7, "", False, False]]}, "a label must be a non-empty string, got 7"),
    ({"relations": [[0, 1, 4, 5, None, "", False, False]]}, "a label must be a non-empty string, got None"),
    ({"ner": [[0, 1, None]]}, "a label must be a non-empty string, got None"),
    ({"ner": [[0, 10 ** 30, "person"]]}, "does not name tokens of the 9-token sentence"),
    ({"ner": [[-1, -1, "person"]]}, "does not name tokens of the 9-token sentence"),
    ({"relations": [[-1, -1, 4, 5, "social"]]}, "does not name tokens"),
    ({"ner": [[0, 1, "person"], [1, 2, "person"]], "relations": []}, "overlap"),
    ({"ner": [[0, 1]]}, "fewer than 3 fields"),
    ({"sentence": "Ada Lovelace worked"}, "'sentence' must be a list of tokens"),
    ({"sentence": ["Ada", ""]}, "'sentence' must be a list of tokens"),
    ({"ner": "none"}, "'ner' must be a list of lists"),
    ({"relations": [3]}, "'relations' must be a list of lists"),
])
def test_malformed_crossre_rows_are_named_with_their_line(tmp_path, change, message):
    path = write_crossre(tmp_path / "news-test.json", [ROWS[1], dict(ROWS[0], **change)])
    with pytest.raises(ValueError, match=f"news-test.json:2: .*{message}"):
        read_corpora(path)


def independent_triple_f1(rows, predicted):
    """Triple F1 from CrossRE's own rows: ``predicted`` is {(doc_key, hs, he, ts, te, type)}."""
    gold = {(row["doc_key"], *rel[:5]) for row in rows for rel in row["relations"]}
    tp = len(gold & predicted)
    p, r = tp / len(predicted), tp / len(gold)
    return 2 * p * r / (p + r)


def test_triple_f1_equals_a_computation_on_crossre_rows(tmp_path):
    source = DATASETS / "crossre" / "ai-test.json"
    if not source.is_file():
        pytest.skip(f"needs CrossRE at {source} (../shared/datasets, which CI has beside the checkout)")
    rows = [json.loads(line) for line in source.read_text(encoding="utf8").splitlines()[:40]]
    path = write_crossre(tmp_path / "ai-test.json", rows)
    entities, pairs = read_corpora(path)
    records = corpus_records(pairs, "crossre-ai", all_labels=True)
    # Predictions at CrossRE's level: gold triples with some dropped and some false ones added.
    rng = random.Random(0)
    types = sorted({rel[4] for row in rows for rel in row["relations"]})
    predicted = {(row["doc_key"], *rel[:5]) for row in rows for rel in row["relations"] if rng.random() < 0.7}
    predicted |= {(row["doc_key"], *h[:2], *t[:2], rng.choice(types)) for row in rows
                  for h, t in permutations(row["ner"], 2) if rng.random() < 0.05}
    # ... turned into each pair record's answer by finding the record's sentence and spans by hand
    by_text = {}
    for row in rows:
        starts, at = [], 0
        for word in row["sentence"]:
            starts.append(at)
            at += len(word) + 1
        by_text[" ".join(row["sentence"])] = (row["doc_key"], {s: i for i, s in enumerate(starts)})
    answers = []
    for record in records:
        text = next(t for t in by_text if record["text"].endswith(" in " + t))
        key, token_at = by_text[text]
        offset = len(record["text"]) - len(text)
        (hs, he), (ts, te) = [[at - offset for at in record["pair"][key]] for key in ("head", "tail")]
        h_start, t_start = token_at[hs], token_at[ts]
        h_end, t_end = h_start + text[hs:he].count(" "), t_start + text[ts:te].count(" ")
        labels = sorted({t[5] for t in predicted if t[:5] == (key, h_start, h_end, t_start, t_end)})
        answers.append([label.replace("-", " ") for label in labels] or [NO_RELATION])
    expected = independent_triple_f1(rows, predicted)
    assert triple_f1(records, answers)["f"] == pytest.approx(expected)
    # and as `seqgpt evaluate` reports it, next to the mean over the atomic tasks
    ent_records = corpus_records(entities, "crossre-ai", all_labels=True)
    all_records = ent_records + records
    predictions = [r["answer"] for r in ent_records] + answers
    results = score_records(all_records, predictions, [""] * len(all_records), ["crossre-ai"])
    relation = results["crossre-ai/relation"]
    assert relation["triple_f1"] == pytest.approx(expected) and relation["split"] == "held-out"
    assert relation["f1"] == pytest.approx(
        (results["crossre-ai/extract"]["f1"] + results["crossre-ai/classify"]["f1"]) / 2
    )
    assert summarize(results)["ALL"]["datasets"] == 1  # the relation dataset counts once


@pytest.mark.slow  # converts and evaluates CrossRE whole
def test_convert_all_and_evaluate_report_crossre_held_in_and_held_out(seqgpt_tiny, tmp_path):
    import subprocess
    import sys

    import srsly

    source = DATASETS / "crossre"
    if not source.is_dir():
        pytest.skip(f"needs CrossRE at {source} (../shared/datasets, which CI has beside the checkout)")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "crossre").symlink_to(source)
    command = [sys.executable, "-m", "spacy", "seqgpt"]
    converted = subprocess.run([*command, "convert-all", str(tmp_path / "data"), str(tmp_path / "corpus"),
                                "--eval-limit", "3", "--train-limit", "5"], capture_output=True, text=True)
    assert converted.returncode == 0, converted.stderr
    assert sorted(p.name for p in (tmp_path / "corpus" / "train").iterdir()) == [
        "crossre-news.jsonl"
    ]  # held out: eval only
    evaluated = subprocess.run([*command, "evaluate", seqgpt_tiny, str(tmp_path / "corpus" / "eval"), "--output",
                                str(tmp_path / "metrics"), "--max-new-tokens", "8"], capture_output=True, text=True)
    assert evaluated.returncode == 0, evaluated.stderr
    results = srsly.read_json(tmp_path / "metrics" / "metrics.json")["results"]
    for domain in ("ai", "literature", "music", "politics", "science"):
        row = results[f"crossre-{domain}/relation"]
        assert row["split"] == "held-out" and row["n"] == 6 and 0.0 <= row["triple_f1"] <= 1.0
    assert results["crossre-news/relation"]["split"] == "held-in"
