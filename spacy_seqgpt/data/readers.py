"""Readers of public NLU corpora into gold examples of the two atomic tasks.

Each reader returns a :class:`~spacy_seqgpt.data.records.GoldCorpus`: the task, the language, the dataset's whole label
set (readable words, see ``label_words``) and its examples, each a text with its gold
character spans (extraction) or gold labels (classification).
"""
import csv
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from .conll import read_sentences
from ..text.iob import spans_from_tags
from ..prompts import CLASSIFY, EXTRACT
from .label_words import label_word
from .records import GoldCorpus, GoldExample, json_line

FORMATS = ("conll", "weibo", "semeval-aspects", "semeval-polarity", "csv", "tnews", "docbin", "crossre")
SEMEVAL_POLARITIES = ("positive", "negative", "neutral", "conflict")
ASPECT_LABEL = "aspect term"
_WEIBO_POSITION = re.compile(r"\d$")  # weibo-ner appends the character's word-segment position
_CROSSRE_FILE = re.compile(r"(news|ai|literature|music|politics|science)-(train|dev|test)\.json$")


def guess_format(path: Path) -> str:
    """The format of a file of the public datasets, from its name."""
    name = path.name.lower()
    if "weibo" in name:
        return "weibo"
    if name.endswith(".xml"):
        return "semeval-aspects"
    if name.endswith(".csv"):
        return "csv"
    if _CROSSRE_FILE.match(name) or (name.endswith(".json") and path.parent.name.lower() == "crossre"):
        return "crossre"
    if name.endswith(".json") or name.endswith(".jsonl"):
        return "tnews"
    if name.endswith(".spacy"):
        return "docbin"
    return "conll"


def read_corpora(path, fmt: str = "auto", *, lang: Optional[str] = None,
                 label_map: Optional[Mapping[str, str]] = None) -> List[GoldCorpus]:
    """The corpora of ``path``: one for most formats; relation corpora (CrossRE, a DocBin whose
    Docs carry ``doc._.rel``) give two, the entities and the span pairs (``data.relations``)."""
    from .relations import CROSSRE_RELATIONS, has_relations, read_crossre, read_relation_docbin, relation_corpora

    path, fmt = _checked(path, fmt)
    if fmt == "crossre":
        labels = [label_word(tag, label_map) for tag in CROSSRE_RELATIONS]
        return list(relation_corpora(read_crossre(path, label_map, lang or "en"), lang or "en", labels=labels))
    if fmt == "docbin":
        docs = read_relation_docbin(path, lang or "en")
        if has_relations(docs):
            return list(relation_corpora(docs, lang or "en"))
    return [read_corpus(path, fmt, lang=lang, label_map=label_map)]


def _checked(path, fmt: str):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    if fmt == "auto":
        fmt = guess_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)} or auto")
    return path, fmt


def read_corpus(path, fmt: str = "auto", *, lang: Optional[str] = None,
                label_map: Optional[Mapping[str, str]] = None) -> GoldCorpus:
    """Read ``path`` in format ``fmt`` (one of ``FORMATS``, or ``auto``: from the file name)."""
    path, fmt = _checked(path, fmt)
    if fmt == "crossre":
        raise ValueError(f"{path} is a relation corpus, which gives two corpora (entities and pairs): "
                         "read it with read_corpora")
    if fmt in ("conll", "weibo"):
        return _read_iob(path, lang or ("zh" if fmt == "weibo" else "en"), fmt == "weibo", label_map)
    if fmt == "semeval-aspects":
        return _read_semeval(path, lang or "en", polarity=False)
    if fmt == "semeval-polarity":
        return _read_semeval(path, lang or "en", polarity=True)
    if fmt == "csv":
        return _read_csv(path, lang or "en", label_map)
    if fmt == "tnews":
        return _read_tnews(path, lang or "zh", label_map)
    return _read_docbin(path, lang or "en", label_map)


def _labels_seen(examples: List[GoldExample], extra=()) -> List[str]:
    seen: Dict[str, None] = dict.fromkeys(extra)
    for example in examples:
        seen.update(dict.fromkeys(label for _, _, label in example.spans))
        seen.update(dict.fromkeys(example.cats))
    return list(seen)


def _read_iob(path: Path, lang: str, weibo: bool, label_map) -> GoldCorpus:
    separator = "" if lang in ("zh", "ja", "th") else " "
    examples = []
    tag_set: Dict[str, None] = {}
    # spans_from_tags also reads IOB1 (an I- tag may open an entity)
    for tokens, tags in read_sentences(path):
        if weibo:
            tokens = [_WEIBO_POSITION.sub("", token) or token for token in tokens]
        starts, offset = [], 0
        for token in tokens:
            starts.append(offset)
            offset += len(token) + len(separator)
        text = separator.join(tokens)
        spans = []
        for start, end, tag in spans_from_tags(tags):
            tag_set[tag] = None
            spans.append((starts[start], starts[end - 1] + len(tokens[end - 1]), label_word(tag, label_map)))
        examples.append(GoldExample(text, spans=spans))
    labels = [label_word(tag, label_map) for tag in tag_set]
    return GoldCorpus(EXTRACT, lang, labels, examples)


def _read_semeval(path: Path, lang: str, polarity: bool) -> GoldCorpus:
    """Aspect extraction (label ``aspect term``), or aspect polarity: one classification
    example per aspect term, the term named after the sentence."""
    examples = []
    for sentence in ElementTree.parse(path).getroot().iter("sentence"):
        text = sentence.findtext("text") or ""
        terms = sentence.findall("aspectTerms/aspectTerm")
        if polarity:
            for term in terms:
                examples.append(GoldExample(f"{text} (aspect: {term.get('term')})", cats=[term.get("polarity")]))
        else:
            spans = [(int(t.get("from")), int(t.get("to")), ASPECT_LABEL) for t in terms if t.get("to") != "0"]
            examples.append(GoldExample(text, spans=spans))
    if polarity:
        return GoldCorpus(CLASSIFY, lang, list(SEMEVAL_POLARITIES), examples)
    return GoldCorpus(EXTRACT, lang, [ASPECT_LABEL], examples)


def _read_csv(path: Path, lang: str, label_map) -> GoldCorpus:
    """``text,category`` rows (a CSV parser: quoted rows may hold line breaks)."""
    examples = []
    with path.open(encoding="utf-8-sig", newline="") as stream:
        rows = csv.DictReader(stream)
        if not rows.fieldnames or {"text", "category"} - set(rows.fieldnames):
            raise ValueError(f"{path}: expected a CSV header with 'text' and 'category', got {rows.fieldnames}")
        for row in rows:
            examples.append(GoldExample(row["text"].strip(), cats=[label_word(row["category"], label_map)]))
    return GoldCorpus(CLASSIFY, lang, _labels_seen(examples), examples)


def _read_tnews(path: Path, lang: str, label_map) -> GoldCorpus:
    """TNEWS JSON lines; label names from ``label_index2en2zh.json`` beside the file when there
    (Chinese names for ``lang="zh"``), else from ``label_desc``."""
    names = {}
    index_file = path.parent / "label_index2en2zh.json"
    if index_file.exists():
        for line in index_file.read_text(encoding="utf-8-sig").splitlines():
            if line.strip():
                entry = json.loads(line)
                names[entry["label_desc"]] = (
                    entry["label_zh"] if lang == "zh" else entry["label_desc"].replace("news_", "")
                )
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        row = json_line(line, f"{path}:{number}")
        if not isinstance(row, dict) or "sentence" not in row or "label_desc" not in row:
            raise ValueError(f"{path}:{number}: expected 'sentence' and 'label_desc'")
        desc = row["label_desc"]
        label = label_word(desc, label_map) if label_map and desc in label_map else names.get(desc, label_word(desc))
        examples.append(GoldExample(row["sentence"], cats=[label]))
    return GoldCorpus(CLASSIFY, lang, _labels_seen(examples, names.values()), examples)


def _read_docbin(path: Path, lang: str, label_map) -> GoldCorpus:
    """A spaCy DocBin: entities give extraction examples, or, where the Docs have no entities
    but ``doc.cats``, the categories scoring 0.5 or more give classification examples."""
    import spacy
    from spacy.tokens import DocBin

    docs = list(DocBin().from_disk(path).get_docs(spacy.blank(lang).vocab))
    if docs and not any(doc.ents for doc in docs) and any(doc.cats for doc in docs):
        examples = [GoldExample(doc.text, cats=[label_word(c, label_map) for c, s in doc.cats.items() if s >= 0.5])
                    for doc in docs]
        all_cats = dict.fromkeys(label_word(c, label_map) for doc in docs for c in doc.cats)
        return GoldCorpus(CLASSIFY, lang, list(all_cats), examples)
    examples = [GoldExample(doc.text, spans=[(e.start_char, e.end_char, label_word(e.label_, label_map))
                                             for e in doc.ents]) for doc in docs]
    return GoldCorpus(EXTRACT, lang, _labels_seen(examples), examples)
