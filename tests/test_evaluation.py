"""The SeqGPT metric against hand-computed values, and the evaluate report."""
import pytest

from spacy_seqgpt.evaluation import answer_pairs, micro_f1, rouge_scores, score_records, span_f1, summarize
from spacy_seqgpt.reports import markdown_table


def test_micro_f1_over_label_answer_pairs():
    gold = {"person": ["Anna", "Ben"], "city": ["Rome"]}
    predicted = {"person": ["Anna"], "city": ["Paris", "Rome"]}
    # tp: (person, Anna), (city, Rome); fp: (city, Paris); fn: (person, Ben) -> P = R = 2/3
    scores = micro_f1([(answer_pairs("extract", predicted), answer_pairs("extract", gold))])
    assert scores == pytest.approx({"p": 2 / 3, "r": 2 / 3, "f": 2 / 3})
    # summed over records before dividing: tp 1, fp 1 (second record), fn 0
    scores = micro_f1([(answer_pairs("classify", ["a"]), answer_pairs("classify", ["a"])),
                       (answer_pairs("classify", ["b"]), answer_pairs("classify", []))])
    assert scores == pytest.approx({"p": 0.5, "r": 1.0, "f": 2 / 3})
    assert micro_f1([]) == {"p": 0.0, "r": 0.0, "f": 0.0}


def test_rouge_english_words_and_chinese_characters():
    # prediction "a b c", reference "a b d": R1 = 2/3; bigrams {ab, bc} vs {ab, bd}: R2 = 1/2; LCS "a b": RL = 2/3
    scores = rouge_scores(["a b c"], ["a b d"], "en")
    assert scores["rouge1"] == pytest.approx(2 / 3)
    assert scores["rouge2"] == pytest.approx(1 / 2)
    assert scores["rougeL"] == pytest.approx(2 / 3)
    assert scores["rouge"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    # rouge-score's own tokenizer would see no tokens in Chinese; by characters: 2 of 3 shared
    assert rouge_scores(["北京市"], ["北京人"], "zh")["rouge1"] == pytest.approx(2 / 3)


def record(text, answer, labels, task="extract", spans=None, source="d"):
    r = {"task": task, "text": text, "labels": labels, "answer": answer, "source": source, "lang": "en"}
    if spans is not None:
        r["spans"] = spans
    return r


def test_score_is_mean_of_f1_and_rouge_and_span_f1_is_strict():
    records = [record("Anna met Ben in Rome", {"person": ["Anna", "Ben"], "city": ["Rome"]}, ["person", "city"],
                      spans=[[0, 4, "person"], [9, 12, "person"], [16, 20, "city"]])]
    predictions = [{"person": ["Anna", "Ben"], "city": ["Rome"]}]
    generated = ["person: Anna, Ben\ncity: Rome"]
    result = score_records(records, predictions, generated, held_out=["crossner"])["d/extract"]
    assert result["split"] == "held-in"
    assert score_records([dict(records[0], source="crossner-ai")], predictions, generated,
                         held_out=["crossner"])["crossner-ai/extract"]["split"] == "held-out"
    assert result["f1"] == 1.0 and result["rouge"] == pytest.approx(1.0) and result["score"] == pytest.approx(1.0)
    assert result["span_f1"] == 1.0
    # "Ben" found but labelled city: one false positive and one false negative among 3 gold spans
    assert span_f1(records, [{"person": ["Anna"], "city": ["Rome", "Ben"]}])["f"] == pytest.approx(2 / 3)
    # a phrase occurring twice gives two predicted spans, one of them wrong
    twice = [record("Rome and Rome", {"city": ["Rome"]}, ["city"], spans=[[0, 4, "city"]])]
    assert span_f1(twice, [{"city": ["Rome"]}]) == pytest.approx({"p": 0.5, "r": 1.0, "f": 2 / 3})


def test_summary_and_table_split_held_in_from_held_out():
    results = {
        "conll/extract": {"source": "conll", "task": "extract", "split": "held-in", "n": 2, "f1": 0.5, "rouge": 0.7, "score": 0.6,
                          "rouge1": 0.7, "rouge2": 0.7, "rougeL": 0.7},
        "crossner-ai/extract": {"source": "crossner-ai", "task": "extract", "split": "held-out", "n": 1, "f1": 0.1, "rouge": 0.3,
                                "score": 0.2, "rouge1": 0.3, "rouge2": 0.3, "rougeL": 0.3},
        "tnews/classify": {"source": "tnews", "task": "classify", "split": "held-in", "n": 1, "f1": 1.0, "rouge": 1.0, "score": 1.0,
                           "rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0},
    }
    summary = summarize(results)
    assert summary["held-out"]["score"] == pytest.approx(0.2)
    assert summary["held-in"]["score"] == pytest.approx(0.8)
    assert summary["extract"]["f1"] == pytest.approx(0.3)
    assert summary["ALL"]["datasets"] == 3
    table = markdown_table(results, summary)
    rows = [line for line in table.splitlines() if line.startswith("| crossner-ai")]
    assert rows and "held-out" in rows[0]
