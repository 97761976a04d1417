"""The CoNLL-style corpus reader: files to Docs and spaCy Examples."""
import pytest
import spacy
from spacy.util import registry

from spacy_seqgpt.data.conll import read_docs, read_sentences

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""
# IOB1 (an I- tag may start an entity) and two columns, as WNUT-17 and CrossNER write them.
IOB1 = "New\tI-LOC\nYork\tI-LOC\nand\tO\nParis\tI-LOC\n"


def test_sentences_and_entities(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CONLL, encoding="utf8")
    assert list(read_sentences(path)) == [(["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
                                          (["Peter", "Blackburn"], ["B-PER", "I-PER"])]
    docs = read_docs(spacy.blank("en").vocab, path)
    assert [[(e.text, e.label_) for e in doc.ents] for doc in docs] == [[("EU", "ORG"), ("German", "MISC")],
                                                                        [("Peter Blackburn", "PER")]]
    assert len(read_docs(spacy.blank("en").vocab, path, limit=1)) == 1


def test_iob1_two_columns(tmp_path):
    path = tmp_path / "iob1.txt"
    path.write_text(IOB1, encoding="utf8")
    doc, = read_docs(spacy.blank("en").vocab, path)
    assert [(e.text, e.label_) for e in doc.ents] == [("New York", "LOC"), ("Paris", "LOC")]


def test_registered_reader_gives_examples_with_the_files_tokens(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CONLL, encoding="utf8")
    corpus = registry.resolve({"c": {"@readers": "spacy_seqgpt.ConllCorpus.v1", "path": str(path)}})["c"]
    examples = list(corpus(spacy.blank("en")))
    assert [len(eg.predicted) for eg in examples] == [4, 2]
    assert not examples[0].predicted.ents and examples[0].reference.ents[0].text == "EU"
    assert examples[0].get_aligned_ner() == ["U-ORG", "O", "U-MISC", "O"]


def test_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no CoNLL file"):
        list(read_sentences(tmp_path / "missing.txt"))
    with pytest.raises(FileNotFoundError, match="ConllCorpus"):
        registry.resolve({"c": {"@readers": "spacy_seqgpt.ConllCorpus.v1", "path": str(tmp_path / "x")}})
    bad = tmp_path / "bad.txt"
    bad.write_text("EU B-ORG\nlonely\n", encoding="utf8")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected a token and a tag"):
        list(read_sentences(bad))


def test_reads_conll2003(conll2003):
    docs = read_docs(spacy.blank("en").vocab, conll2003 / "valid.txt", limit=200)
    assert len(docs) == 200
    assert {ent.label_ for doc in docs for ent in doc.ents} == {"PER", "ORG", "LOC", "MISC"}
