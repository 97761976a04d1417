"""The SeqGPT metric against hand-computed values; evaluation decoding as the components do; the report."""
import pytest
import spacy
import srsly

from conftest import CAT_LABELS, EXAMPLES, NER_LABELS, generate_texts, load
from spacy_seqgpt.data.records import make_record
from spacy_seqgpt.decoding import Asker, Decoding
from spacy_seqgpt.evaluation.predict import predict_records, record_requests
from spacy_seqgpt.evaluation.metrics import answer_pairs, micro_f1, rouge_scores, score_records, span_f1, summarize
from spacy_seqgpt.evaluation.reports import markdown_table
from spacy_seqgpt.prompts import CLASSIFY, EXTRACT, build_prompt, parse_answer


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
        "conll/extract": {
            "source": "conll",
            "task": "extract",
            "split": "held-in",
            "n": 2,
            "f1": 0.5, "p": 1.0, "r": 1 / 3,
            "rouge": 0.7,
            "score": 0.6,
            "rouge1": 0.7,
            "rouge2": 0.7,
            "rougeL": 0.7,
        },
        "crossner-ai/extract": {
            "source": "crossner-ai",
            "task": "extract",
            "split": "held-out",
            "n": 1,
            "f1": 0.1, "p": 0.5, "r": 0.05,
            "rouge": 0.3,
            "score": 0.2,
            "rouge1": 0.3,
            "rouge2": 0.3,
            "rougeL": 0.3,
        },
        "tnews/classify": {
            "source": "tnews",
            "task": "classify",
            "split": "held-in",
            "n": 1,
            "f1": 1.0, "p": 1.0, "r": 1.0,
            "rouge": 1.0,
            "score": 1.0,
            "rouge1": 1.0,
            "rouge2": 1.0,
            "rougeL": 1.0,
        },
    }
    summary = summarize(results)
    assert summary["held-out"]["score"] == pytest.approx(0.2)
    assert summary["held-in"]["score"] == pytest.approx(0.8)
    assert summary["extract"]["f1"] == pytest.approx(0.3)
    assert summary["extract"]["p"] == pytest.approx(0.75)
    assert summary["extract"]["r"] == pytest.approx((1 / 3 + 0.05) / 2)
    assert summary["ALL"]["datasets"] == 3
    table = markdown_table(results, summary)
    rows = [line for line in table.splitlines() if line.startswith("| crossner-ai")]
    assert rows and "held-out" in rows[0] and "| 0.500 | 0.050 | 0.100 |" in rows[0]  # p, r, f1
    assert "| extract | 2 | 0.750 | 0.192 | 0.300 |" in table


TAUGHT = [make_record(EXTRACT, text, NER_LABELS, {label: entities.get(label, []) for label in NER_LABELS}, "taught",
                      lang) for lang, text, entities, _ in EXAMPLES]
TAUGHT += [make_record(CLASSIFY, text, CAT_LABELS, [category], "taught", lang) for lang, text, _, category in EXAMPLES]


def test_free_decoding_in_evaluation_is_transformers_generate(seqgpt_tiny):
    shared = load(seqgpt_tiny)
    parsed, generated = predict_records(shared, TAUGHT, Decoding(batch_size=4, max_new_tokens=40, constrained=False))
    prompts = [build_prompt(record["task"], record["text"], record["labels"]) for record in TAUGHT]
    assert generated == [text.strip() for text in generate_texts(shared, prompts, max_new_tokens=40)]
    assert parsed == [parse_answer(record["task"], text, record["labels"]) for record, text in zip(TAUGHT, generated)]


def test_constrained_evaluation_gives_the_taught_answers(seqgpt_tiny):
    parsed, _ = predict_records(load(seqgpt_tiny), TAUGHT, Decoding(batch_size=4, max_new_tokens=40))
    assert parsed == [record["answer"] for record in TAUGHT]


def test_evaluation_asks_what_the_components_ask(seqgpt_tiny):
    """Same windows and label chunks: a long text (a window of at most 12 subwords) and 7 labels."""
    text = " ".join(text for lang, text, _, _ in EXAMPLES if lang == "en")
    labels = NER_LABELS + ["date", "event", "product", "law"]
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("seqgpt_ner", config={"labels": labels, "model": seqgpt_tiny,
                                             "decoding": {"max_input_tokens": 12}})
    record = make_record(EXTRACT, text, labels, {label: [] for label in labels}, "x", "en")
    ours = record_requests(Asker(load(seqgpt_tiny), Decoding(max_input_tokens=12)), [record])
    theirs = ner.make_requests([nlp.make_doc(text)])
    assert len({r.start_char for r in ours}) > 2 and [len(r.label_texts) for r in ours[:2]] == [6, 1]
    assert ours == theirs


def test_the_report_says_how_answers_were_decoded(seqgpt_tiny, tmp_path):
    from typer.testing import CliRunner

    from spacy_seqgpt.cli import seqgpt_cli

    srsly.write_jsonl(tmp_path / "records.jsonl", TAUGHT[:2])
    for switch, word in (("--free", "free"), ("--constrained", "constrained")):
        result = CliRunner().invoke(seqgpt_cli, ["evaluate", seqgpt_tiny, str(tmp_path / "records.jsonl"),
                                          "-o", str(tmp_path / word), "--max-new-tokens", "40", switch])
        assert result.exit_code == 0, result.output
        assert (tmp_path / word / "metrics.md").read_text().startswith(f"Decoding: {word}, greedy")
        assert srsly.read_json(tmp_path / word / "metrics.json")["decoding"]["constrained"] == (word == "constrained")
    command = ["evaluate", seqgpt_tiny, str(tmp_path / "records.jsonl"), "-o", str(tmp_path / "search"),
               "--max-new-tokens", "40", "--span-search"]
    refused = CliRunner().invoke(seqgpt_cli, command)
    assert refused.exit_code == 1 and "--threshold above 0" in refused.output
    result = CliRunner().invoke(seqgpt_cli, command + ["--threshold", "0.2"])
    assert result.exit_code == 0, result.output
    assert "every span at least 0.2 likely (span search)" in (tmp_path / "search" / "metrics.md").read_text()
    decoding = srsly.read_json(tmp_path / "search" / "metrics.json")["decoding"]
    assert decoding["span_search"] is True and decoding["threshold"] == 0.2


@pytest.mark.parametrize("multi_label", [False, True], ids=["single-label", "multi-label"])
def test_evaluation_answers_what_the_pipeline_writes(seqgpt_tiny, tiny_bloom, multi_label):
    """``seqgpt evaluate``'s answers (``predict_records``) are the pipeline's: seqgpt_ner's spans
    and seqgpt_textcat's labels under the same decoding block. On random weights a classification
    grammar that lets an answer name several labels would, where the single-label one names one."""
    decoding = Decoding(batch_size=4, max_new_tokens=24)
    texts = [text for _, text, _, _ in EXAMPLES] + ["A quiet day.", "Markets fell while the team won."]
    for model in (seqgpt_tiny, tiny_bloom):
        records = [make_record(CLASSIFY, text, CAT_LABELS, [], "x", "en") for text in texts]
        if model == seqgpt_tiny:  # random weights name phrases the tokens may not end with
            records += [record for record in TAUGHT if record["task"] == EXTRACT]
        parsed, _ = predict_records(load(model), records, decoding, multi_label=multi_label)
        pipelines = {}
        for record, answer in zip(records, parsed):
            if record["lang"] not in pipelines:
                nlp = pipelines[record["lang"]] = spacy.blank(record["lang"])
                settings = {"model": str(model), "decoding": decoding.to_dict()}
                nlp.add_pipe("seqgpt_ner", config={**settings, "labels": NER_LABELS, "spans_key": "found"})
                nlp.add_pipe("seqgpt_textcat", config={**settings, "labels": CAT_LABELS, "multi_label": multi_label})
            doc = pipelines[record["lang"]](record["text"])
            if record["task"] == CLASSIFY:
                assert sorted(answer) == sorted(label for label, value in doc.cats.items() if value == 1.0), record
            else:
                found = {label: [] for label in NER_LABELS}
                for span in doc.spans["found"]:
                    found[span.label_] += [span.text] if span.text not in found[span.label_] else []
                assert found == answer
