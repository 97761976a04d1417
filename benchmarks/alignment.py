"""Compiled alignment against its Python reference and against the spacy-llm way.

The load is the whole CoNLL-2003 test set: every document is queried with each of its gold
entity strings plus as many phrases that are absent from it (entity strings of other
documents), as a SeqGPT answer would query it; subword alignment maps the tiny BLOOM
tokenizer's offsets of each document onto its tokens. Prints the median time of each
function, one ratio per function, the ratio against the spacy-llm way (``str.find`` for
each phrase plus ``Doc.char_span``), and last the geometric-mean speedup over the reference.

    python benchmarks/alignment.py [--data ../shared/datasets/conll2003/test.txt] [--repeats 5]
"""
import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy
import spacy
from spacy.tokens import Doc, Span
from wasabi import msg

from spacy_seqgpt.models.tiny import write_tiny_model
from spacy_seqgpt.text import alignment

# the Python twin the tests check the compiled aligner against (tests/kernels/, not in the wheel)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "kernels"))
import alignment_reference  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "conll2003" / "test.txt"


def read_conll_documents(path: Path):
    """``[(words, spaces, entity strings)]``, one per ``-DOCSTART-`` document; sentences end with a newline."""
    documents, words, spaces, entities, current = [], [], [], [], None
    for line in list(path.read_text(encoding="utf8").splitlines()) + ["-DOCSTART-"]:
        if line.startswith("-DOCSTART-") or not line.strip():
            if current:
                entities.append(" ".join(current))
                current = None
            if words and not line.strip():
                spaces[-1] = False
                words.append("\n")
                spaces.append(False)
            if line.startswith("-DOCSTART-") and words:
                documents.append((words, spaces, entities))
                words, spaces, entities = [], [], []
            continue
        token, tag = line.split()[0], line.split()[-1]
        if current and not tag.startswith("I-"):
            entities.append(" ".join(current))
            current = None
        if tag != "O":
            current = (current or []) + [token]
        words.append(token)
        spaces.append(True)
    return documents


def build_load(path: Path, seed: int = 0):
    nlp = spacy.blank("en")
    rng = random.Random(seed)
    documents = read_conll_documents(path)
    every_entity = sorted({entity for _, _, entities in documents for entity in entities})
    load = []
    for words, spaces, entities in documents:
        doc = Doc(nlp.vocab, words=words, spaces=spaces)
        present = sorted(set(entities))
        absent = [e for e in rng.sample(every_entity, min(len(every_entity), 4 * len(present) + 8))
                  if e not in doc.text][:len(present)]
        load.append((doc, doc.text, present + absent))
    return load


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def spacy_llm_way(doc: Doc, text: str, phrases):
    """What spacy-llm does: ``str.find`` for every phrase, then ``Doc.char_span``."""
    spans = []
    for phrase in phrases:
        start = text.find(phrase)
        while start >= 0:
            span = doc.char_span(start, start + len(phrase), label="ENT", alignment_mode="expand")
            if span is not None:
                spans.append(span)
            start = text.find(phrase, start + 1)
    return spans


def main(data: Path, repeats: int):
    if not data.exists():
        msg.fail(f"No CoNLL-2003 test file at {data}; pass --data.", exits=1)
    load = build_load(data)
    matches = [alignment.find_phrases(text, phrases) for _, text, phrases in load]
    char_ranges = [([s for _, s, _ in found], [e for _, _, e in found]) for found in matches]
    token_ranges = [alignment.char_spans_to_tokens(doc, s, e, "expand") if s else ([], [])
                    for (doc, _, _), (s, e) in zip(load, char_ranges)]
    with tempfile.TemporaryDirectory() as tmp:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(write_tiny_model(Path(tmp) / "bloom", "bloom"))
    offsets = [tokenizer(text, return_offsets_mapping=True)["offset_mapping"] for _, text, _ in load]
    n_phrases = sum(len(phrases) for _, _, phrases in load)
    msg.info(f"{len(load)} documents, {sum(len(doc) for doc, _, _ in load)} tokens, {n_phrases} phrases "
             f"queried, {sum(map(len, matches))} found, {sum(map(len, offsets))} subwords; median of {repeats}")

    def ours_end_to_end():
        for doc, text, phrases in load:
            found = alignment.find_phrases(text, phrases, word_boundaries=False)
            if found:
                starts, ends = alignment.char_spans_to_tokens(doc, [s for _, s, _ in found],
                                                              [e for _, _, e in found], "expand")
                [Span(doc, s, e, label="ENT") for s, e in zip(starts.tolist(), ends.tolist()) if s >= 0]

    functions = {
        "find_phrases": (
            lambda: [alignment.find_phrases(text, phrases) for _, text, phrases in load],
            lambda: [alignment_reference.find_phrases(text, phrases) for _, text, phrases in load]),
        "char_spans_to_tokens": (
            lambda: [alignment.char_spans_to_tokens(doc, s, e, "expand") for (doc, _, _), (s, e) in
                     zip(load, char_ranges) if s],
            lambda: [alignment_reference.char_spans(doc, s, e, "expand") for (doc, _, _), (s, e) in
                     zip(load, char_ranges) if s]),
        "align_subwords": (
            lambda: [alignment.align_subwords(doc, pairs) for (doc, _, _), pairs in zip(load, offsets)],
            lambda: [alignment_reference.align_subwords(doc, pairs) for (doc, _, _), pairs in zip(load, offsets)]),
        "resolve_overlaps": (
            lambda: [alignment.resolve_overlaps(s, e) for s, e in token_ranges if len(s)],
            lambda: [alignment_reference.resolve_overlaps(s.tolist(), e.tolist()) for s, e in token_ranges
                     if len(s)]),
    }
    rows, speedups = [], []
    for name, (compiled, reference) in functions.items():
        ours, theirs = median_seconds(compiled, repeats), median_seconds(reference, repeats)
        speedups.append(theirs / ours)
        rows.append((name, f"{ours * 1e3:.1f} ms", f"{theirs * 1e3:.1f} ms", f"{theirs / ours:.1f}x"))
    msg.table(rows, header=("function", "compiled", "Python reference", "speedup"), divider=True)
    ours = median_seconds(ours_end_to_end, repeats)
    theirs = median_seconds(lambda: [spacy_llm_way(*item) for item in load], repeats)
    msg.table([("phrases to Spans", f"{ours * 1e3:.1f} ms", f"{theirs * 1e3:.1f} ms", f"{theirs / ours:.1f}x")],
              header=("task", "compiled", "spacy-llm way", "speedup"), divider=True)
    print(f"speedup (geometric mean): {numpy.exp(numpy.mean(numpy.log(speedups))):.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    main(arguments.data, arguments.repeats)
