"""Corpus conversion into atomic-task records: each format, negative sampling, quotas."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab
from conftest import ROOT

from spacy_seqgpt.data.readers import read_corpus
from spacy_seqgpt.data.records import GoldCorpus, GoldExample
from spacy_seqgpt.data.records import check_record, read_records
from spacy_seqgpt.data.sampling import NO_LABEL, corpus_records


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf8")
    return path


def test_conll_iob(tmp_path):
    path = write(tmp_path, "train.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n"
                 "German JJ B-NP B-MISC\ncall NN I-NP O\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n")
    corpus = read_corpus(path)
    assert corpus.labels == ["organization", "miscellaneous", "person"]
    records = corpus_records(corpus, "conll2003", all_labels=True)
    assert records[0] == {
        "task": "extract",
        "text": "EU rejects German call",
        "labels": corpus.labels,
        "answer": {"organization": ["EU"], "miscellaneous": ["German"], "person": []},
        "source": "conll2003",
        "lang": "en",
        "spans": [[0, 2, "organization"], [11, 17, "miscellaneous"]],
    }
    assert records[1]["answer"]["person"] == ["Peter Blackburn"]


def test_crossner_wnut_tab_files_and_iob1(tmp_path):
    path = write(tmp_path, "dev.txt", "The\tO\nPython\tI-programlang\nlanguage\tO\nat\tO\nGoogle\tB-organisation\n")
    record = corpus_records(read_corpus(path), "crossner-ai", all_labels=True)[0]
    assert record["answer"] == {"programming language": ["Python"], "organization": ["Google"]}


def test_weibo_strips_segment_digits_and_joins_without_spaces(tmp_path):
    path = write(tmp_path, "weiboNER_2nd_conll.train", "我0\tO\n在0\tO\n北0\tB-GPE.NAM\n京1\tI-GPE.NAM\n\n")
    record = corpus_records(read_corpus(path), "weibo-ner", all_labels=True)[0]
    assert (record["text"], record["lang"], record["answer"]) == ("我在北京", "zh", {"行政区名": ["北京"]})
    assert record["spans"] == [[2, 4, "行政区名"]]


SEMEVAL = """<?xml version="1.0" encoding="UTF-8"?>
<sentences><sentence id="1"><text>The staff was rude but the pasta was great.</text>
<aspectTerms><aspectTerm term="staff" polarity="negative" from="4" to="9"/>
<aspectTerm term="pasta" polarity="positive" from="27" to="32"/></aspectTerms></sentence>
<sentence id="2"><text>Nothing to say.</text></sentence></sentences>"""


def test_semeval_aspects_and_polarity(tmp_path):
    path = write(tmp_path, "Restaurants_Train.xml", SEMEVAL)
    aspects = corpus_records(read_corpus(path), "semeval", all_labels=True)
    assert aspects[0]["answer"] == {"aspect term": ["staff", "pasta"]}
    assert aspects[1]["answer"] == {"aspect term": []}
    polarity = corpus_records(read_corpus(path, "semeval-polarity"), "semeval", all_labels=True)
    assert [(r["text"], r["answer"]) for r in polarity] == [
        ("The staff was rude but the pasta was great. (aspect: staff)", ["negative"]),
        ("The staff was rude but the pasta was great. (aspect: pasta)", ["positive"])]
    assert polarity[0]["labels"] == ["positive", "negative", "neutral", "conflict"]


def test_csv_with_quoted_line_breaks(tmp_path):
    path = write(tmp_path, "train.csv", 'text,category\n"My card\nhas not arrived",card_arrival\nRate?,exchange_rate\n')
    records = corpus_records(read_corpus(path), "banking77", all_labels=True)
    assert [(r["text"], r["answer"]) for r in records] == [("My card\nhas not arrived", ["card arrival"]),
                                                            ("Rate?", ["exchange rate"])]


def test_tnews_uses_chinese_label_names(tmp_path):
    write(tmp_path, "label_index2en2zh.json", '{"label": "103", "label_desc": "news_sports","label_zh":"体育"}\n'
          '{"label": "104", "label_desc": "news_finance","label_zh":"财经"}\n')
    path = write(
        tmp_path,
        "train_few_all.json",
        json.dumps({"label": 103, "label_desc": "news_sports", "sentence": "国足获胜", "id": 1}, ensure_ascii=False)
        + "\n",
    )
    corpus = read_corpus(path)
    assert corpus.labels == ["体育", "财经"]  # the whole label set, also labels without examples
    record = corpus_records(corpus, "tnews", all_labels=True)[0]
    assert (record["text"], record["answer"], record["lang"]) == ("国足获胜", ["体育"], "zh")


def test_docbin_entities_and_cats(tmp_path):
    vocab = Vocab()
    doc = Doc(vocab, words=["Anna", "visited", "Rome"])
    doc.ents = [doc.char_span(0, 4, "PER"), doc.char_span(13, 17, "LOC")]
    DocBin(docs=[doc]).to_disk(tmp_path / "ents.spacy")
    record = corpus_records(read_corpus(tmp_path / "ents.spacy"), "mine", all_labels=True)[0]
    assert record["answer"] == {"person": ["Anna"], "location": ["Rome"]}
    cat_doc = Doc(vocab, words=["Great", "match"])
    cat_doc.cats = {"SPORTS": 1.0, "POLITICS": 0.0}
    DocBin(docs=[cat_doc], store_user_data=True).to_disk(tmp_path / "cats.spacy")
    record = corpus_records(read_corpus(tmp_path / "cats.spacy"), "mine", all_labels=True)[0]
    assert (record["task"], record["labels"], record["answer"]) == ("classify", ["sports", "politics"], ["sports"])


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        read_corpus(write(tmp_path, "a.txt", "x O\n"), "yaml")
    with pytest.raises(ValueError, match="'text' and 'category'"):
        read_corpus(write(tmp_path, "b.csv", "sentence,label\nhi,x\n"))
    with pytest.raises(ValueError, match="missing field"):
        check_record({"task": "extract", "text": "x"})
    with pytest.raises(ValueError, match="substrings of the text"):
        check_record({"task": "extract", "text": "a b", "labels": ["x"], "answer": {"x": ["c"]}, "source": "s",
                      "lang": "en"})
    bad = write(tmp_path, "bad.jsonl", '{"task": "classify"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        list(read_records(bad))


LABELS = [f"label{i}" for i in range(8)]


@st.composite
def corpora(draw):
    task = draw(st.sampled_from(["extract", "classify"]))
    examples = []
    for k in range(draw(st.integers(1, 40))):
        gold = draw(st.lists(st.sampled_from(LABELS), max_size=3, unique=True))
        if task == "classify":
            examples.append(GoldExample(f"text {k}", cats=gold[:1] or [LABELS[0]]))
        else:
            text = f"x{k} " + " ".join(f"w{i}" for i in range(len(gold) + 1))
            spans = [(text.index(f"w{i}"), text.index(f"w{i}") + 2, label) for i, label in enumerate(gold)]
            examples.append(GoldExample(text, spans=spans))
    return GoldCorpus(task, "en", list(LABELS), examples)


@settings(max_examples=60, deadline=None)
@given(corpus=corpora(), quota=st.integers(0, 6), max_negatives=st.integers(0, 4), seed=st.integers(0, 5))
def test_negatives_never_gold_and_quotas_hold(corpus, quota, max_negatives, seed):
    records = corpus_records(corpus, "d", seed=seed, quota=quota, max_negatives=max_negatives)
    assert len(records) <= len(corpus.examples)  # never up-sampled
    counts = {}
    for record in records:
        check_record(record)
        example = next(e for e in corpus.examples if e.text == record["text"])  # texts are unique
        gold = set(example.cats) | {label for _, _, label in example.spans}
        if corpus.task == "classify":
            positives = set(record["answer"])
        else:
            positives = {label for label, spans in record["answer"].items() if spans}
        negatives = set(record["labels"]) - positives
        assert not negatives & gold, "a gold label was sampled as a negative"
        assert len(negatives) <= max(max_negatives, 1 if corpus.task == "classify" else 0) or not positives
        for key in positives or {NO_LABEL}:
            counts[key] = counts.get(key, 0) + 1
    if quota:
        assert all(count <= quota for count in counts.values()), counts
    assert corpus_records(corpus, "d", seed=seed, quota=quota, max_negatives=max_negatives) == records  # seeded


VARIED = ["person", "location", "organization", "product"]  # labels with other words (label_words.VARIANTS)


@settings(max_examples=40, deadline=None)
@given(corpus=corpora(), share=st.sampled_from([0.0, 0.5, 1.0]), seed=st.integers(0, 5))
def test_label_variants_reword_a_share_of_extraction_records_and_nothing_else(corpus, share, seed):
    from spacy_seqgpt.data.label_words import VARIANTS

    words = dict(zip(LABELS, VARIED + LABELS[len(VARIED):]))
    corpus = GoldCorpus(corpus.task, "en", [words[label] for label in corpus.labels],
                        [GoldExample(e.text, spans=[(a, b, words[label]) for a, b, label in e.spans],
                                     cats=[words[label] for label in e.cats]) for e in corpus.examples])
    plain = corpus_records(corpus, "d", seed=seed, max_negatives=3)
    varied = corpus_records(corpus, "d", seed=seed, max_negatives=3, label_variants=share)
    assert [r["text"] for r in varied] == [r["text"] for r in plain]  # the same records drawn
    reworded = 0
    for before, after in zip(plain, varied):
        check_record(after)
        if corpus.task == "classify" or share == 0:
            assert after == before
            continue
        assert len({label.casefold() for label in after["labels"]}) == len(after["labels"])
        rename = dict(zip(before["labels"], after["labels"]))
        assert all(new == old or new in VARIANTS.get(old, ()) for old, new in rename.items())
        assert after["answer"] == {rename[label]: spans for label, spans in before["answer"].items()}
        assert after["spans"] == [[a, b, rename[label]] for a, b, label in before["spans"]]
        reworded += after != before
    if share == 1.0 and corpus.task == "extract" and any(label in VARIANTS for r in plain for label in r["labels"]):
        assert reworded
    assert corpus_records(corpus, "d", seed=seed, max_negatives=3, label_variants=share) == varied  # seeded
    evaluation = corpus_records(corpus, "d", all_labels=True, label_variants=1.0)
    assert evaluation == corpus_records(corpus, "d", all_labels=True)  # test sets are asked as they are
    with pytest.raises(ValueError, match="label_variants"):
        corpus_records(corpus, "d", label_variants=1.5)


def test_a_file_that_cannot_be_written_ends_the_command_in_one_clear_line(tmp_path):
    from typer.testing import CliRunner

    from spacy_seqgpt.cli import seqgpt_cli

    source = tmp_path / "train.txt"
    source.write_text("Anna\tB-person\nflew\tO\n", encoding="utf8")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    result = CliRunner().invoke(seqgpt_cli, ["convert", str(source), str(tmp_path / "blocker" / "out.jsonl")])
    assert result.exit_code == 1 and "seqgpt convert stopped" in result.output
    assert not isinstance(result.exception, OSError)  # exited cleanly, no traceback


def run_convert(*args):
    from typer.testing import CliRunner

    from spacy_seqgpt.cli import seqgpt_cli

    return CliRunner().invoke(seqgpt_cli, ["convert", *map(str, args)])


def test_training_examples_whose_answers_would_not_read_back_are_listed_apart(tmp_path):
    """A span with a comma reads back as two, a span "None" as none: such examples are left out of
    training records (and listed), kept in evaluation records; the Python API refuses them."""
    source = write(tmp_path, "train.txt", "\ufeffJohn\tB-PER\nSmith\tI-PER\n,\tI-PER\nJr.\tI-PER\nspoke\tO\n\n"
                   "None\tB-ORG\nwon\tO\n\nAnna\tB-PER\nflew\tO\n\n")
    corpus = read_corpus(source)
    assert corpus.examples[0].text.startswith("John ")  # no byte-order mark in the first token
    with pytest.raises(ValueError, match=r"example 0 .*\['John Smith , Jr.'\] read back .* as \['John Smith', 'Jr.'\]"):
        corpus_records(corpus, "s")
    result = run_convert(source, tmp_path / "train.jsonl")
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in read_records(tmp_path / "train.jsonl")] == ["Anna flew"]
    left_out = [json.loads(line) for line in (tmp_path / "train.left-out.jsonl").read_text().splitlines()]
    assert [(row["example"], row["text"]) for row in left_out] == [(0, "John Smith , Jr. spoke"), (1, "None won")]
    assert "2 training examples left out" in result.output
    assert [r["text"] for r in read_records(tmp_path)] == ["Anna flew"]  # a folder's left-out list is no records
    evaluation = corpus_records(corpus, "s", all_labels=True)  # test sets stay whole
    assert [r["answer"]["person"] for r in evaluation] == [["John Smith , Jr."], [], ["Anna"]]


def test_a_tag_that_makes_an_unwritable_label_says_to_map_it(tmp_path):
    source = write(tmp_path, "train.txt", "Anna\tB-per:son\nflew\tO\n\n")
    result = run_convert(source, tmp_path / "out.jsonl")
    assert result.exit_code == 1 and "contains a colon" in result.output and "--label-map" in result.output
    (tmp_path / "map.json").write_text('{"per:son": "person"}')
    assert run_convert(source, tmp_path / "out.jsonl", "--label-map", tmp_path / "map.json").exit_code == 0
    assert next(read_records(tmp_path / "out.jsonl"))["answer"] == {"person": ["Anna"]}


def test_csv_and_tnews_with_a_byte_order_mark(tmp_path):
    corpus = read_corpus(write(tmp_path, "b.csv", "\ufefftext,category\nhello,greeting\n"))
    assert corpus.examples[0].cats == ["greeting"]
    corpus = read_corpus(write(tmp_path, "t.json", '\ufeff{"sentence": "x", "label_desc": "news_tech"}\n'))
    assert corpus.examples[0].text == "x"


def words(output: str) -> str:
    """A command's output with wasabi's line wrapping undone."""
    return " ".join(output.split())


def test_convert_all_reads_a_presets_corpus_section_and_options_override_it(tmp_path, monkeypatch):
    """`convert-all CONFIG OUT` converts the first of [corpus] data_dirs that exists (paths relative
    to the working directory, as a project runs it), with its limits and skipped sources."""

    from typer.testing import CliRunner

    from spacy_seqgpt.cli import seqgpt_cli

    assets = ROOT / "assets" / "datasets"
    (tmp_path / "samples").symlink_to(assets)
    config = tmp_path / "preset.cfg"
    config.write_text('[corpus]\ndata_dirs = ["missing", "samples"]\nquota = 2\ntrain_limit = 3\neval_limit = 2\n'
                      'skip_sources = ["weibo-ner"]\n')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(seqgpt_cli, ["convert-all", "preset.cfg", "corpus", "--eval-limit", "1"])
    assert result.exit_code == 0, result.output
    assert "Converting samples" in words(result.output)
    # the samples lack most datasets: named, with the command that fetches them (Weibo is skipped, not lacking)
    assert ("samples lacks files of 12 datasets, not converted: conll2003, crossner-literature, crossner-music, "
            "crossner-science, crossre-ai," in words(result.output))
    assert "python -m spacy project assets" in words(result.output)
    train, evaluation = (sorted((tmp_path / "corpus" / split).glob("*.jsonl")) for split in ("train", "eval"))
    assert train and not any("weibo" in path.name for path in train + evaluation)
    assert all(len(list(read_records(path))) <= 3 for path in train)
    assert all(len(list(read_records(path))) == 1 for path in evaluation)  # the option, not the config's 2
    config.write_text('[corpus]\ndata_dirs = ["samples"]\ntrain_limit = 50\nlabel_variants = 1.0\n')
    result = CliRunner().invoke(seqgpt_cli, ["convert-all", "preset.cfg", "varied"])
    assert result.exit_code == 0 and "label variants 1" in words(result.output), result.output
    asked = {label for r in read_records(tmp_path / "varied" / "train" / "wnut17.jsonl") for label in r["labels"]}
    assert asked - {"person", "location", "corporation", "product", "creative work", "group"}  # other words too
    result = CliRunner().invoke(seqgpt_cli, ["convert-all", "preset.cfg", "plain", "--label-variants", "0"])
    asked = {label for r in read_records(tmp_path / "plain" / "train" / "wnut17.jsonl") for label in r["labels"]}
    assert result.exit_code == 0 and asked <= {"person", "location", "corporation", "product", "creative work",
                                               "group"}
    config.write_text('[corpus]\ndata_dirs = ["missing"]\n')
    result = CliRunner().invoke(seqgpt_cli, ["convert-all", "preset.cfg", "corpus"])
    assert result.exit_code == 1 and "none of the [corpus] data_dirs exists: missing" in words(result.output)
    assert "python -m spacy project assets" in words(result.output)
    config.write_text('[corpus]\ndata_dirs = ["samples"]\nquotas = 3\n')
    result = CliRunner().invoke(seqgpt_cli, ["convert-all", "preset.cfg", "corpus"])
    assert result.exit_code == 1 and "unknown setting(s) in [corpus]: quotas" in words(result.output)
    for setting, expected in (('data_dirs = "samples"', "data_dirs must be a list of names"),
                              ('skip_sources = "weibo"', "skip_sources must be a list"),
                              ('skip_sources = ["weibo"]', "skip_sources names no dataset: weibo"),
                              ("quota = 2.5", "'[corpus] quota' must be a whole number"),
                              ("train_limit = true", "'[corpus] train_limit' must be a whole"),
                              ("label_variants = 2", "label_variants is the share"),
                              ('label_variants = "half"', "label_variants is the share")):
        folders = "" if setting.startswith("data_dirs") else 'data_dirs = ["samples"]\n'
        config.write_text(f"[corpus]\n{folders}{setting}\n")
        result = CliRunner().invoke(seqgpt_cli, ["convert-all", "preset.cfg", "corpus"])
        assert result.exit_code == 1 and expected in words(result.output), (setting, result.output)


def test_init_base_writes_the_presets_starting_model_or_names_what_it_knows(tmp_path, monkeypatch):
    from typer.testing import CliRunner
    from transformers import AutoConfig

    from spacy_seqgpt.cli import seqgpt_cli

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "preset.cfg"
    config.write_text('[paths]\nbase_model = "base"\nbase_source = "tiny-llama"\n')
    result = CliRunner().invoke(seqgpt_cli, ["init-base", "preset.cfg", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert AutoConfig.from_pretrained(tmp_path / "base").model_type == "llama"
    result = CliRunner().invoke(seqgpt_cli, ["init-base", "preset.cfg", "--seed", "2"])  # its own folder: replaced
    assert result.exit_code == 0, result.output
    (tmp_path / "base" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(seqgpt_cli, ["init-base", "preset.cfg"])
    assert result.exit_code == 1 and "did not write (notes.txt)" in words(result.output)
    assert (tmp_path / "base" / "notes.txt").read_text() == "mine"
    config.write_text('[paths]\nbase_source = "tiny-llama"\n')
    result = CliRunner().invoke(seqgpt_cli, ["init-base", "preset.cfg"])
    assert result.exit_code == 1 and "names no [paths] base_model" in words(result.output)
    config.write_text('[paths]\nbase_model = "base2"\nbase_source = "gpt-5"\n')
    result = CliRunner().invoke(seqgpt_cli, ["init-base", "preset.cfg"])
    assert result.exit_code == 1 and "unknown [paths] base_source 'gpt-5'" in words(result.output)
    assert "smollm2-135m" in words(result.output) and not (tmp_path / "base2").exists()
    config.write_text('[paths]\nbase_model = "bigscience/bloomz-560m"\n')
    result = CliRunner().invoke(seqgpt_cli, ["init-base", "preset.cfg"])
    assert result.exit_code == 0 and "nothing to write" in words(result.output)
