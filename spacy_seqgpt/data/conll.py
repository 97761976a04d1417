"""CoNLL-style NER files as spaCy training data.

One token per line, the token in the first column and its tag (IOB1, IOB2 or BILUO) in the
last, whitespace separated (CoNLL-2003's four columns, WNUT-17's and CrossNER's two); a blank
line ends a sentence, ``-DOCSTART-`` lines are skipped. Registered as the corpus reader
``spacy_seqgpt.ConllCorpus.v1``, so ``spacy train`` reads such files directly:

    [corpora.train]
    @readers = "spacy_seqgpt.ConllCorpus.v1"
    path = ${paths.train}
"""
from pathlib import Path
from typing import Callable, Iterator, List, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example, iob_to_biluo
from spacy.training.iob_utils import biluo_tags_to_spans
from spacy.util import registry

Sentence = Tuple[List[str], List[str]]  # (tokens, tags)


def read_sentences(path: Union[str, Path]) -> Iterator[Sentence]:
    """(tokens, tags) of each sentence of a CoNLL-style file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CoNLL file at {str(path)!r}")
    tokens: List[str] = []
    tags: List[str] = []
    with path.open(encoding="utf-8-sig") as lines:  # a byte-order mark is not part of the first token
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if tokens:
                    yield tokens, tags
                tokens, tags = [], []
                continue
            if len(fields) < 2:
                raise ValueError(f"{path}:{number}: expected a token and a tag, got {line.strip()!r}")
            tokens.append(fields[0])
            tags.append(fields[-1])
    if tokens:
        yield tokens, tags


def sentence_doc(vocab, tokens: List[str], tags: List[str]) -> Doc:
    """A Doc of the tokens (joined by spaces) with its entities set from the tags."""
    doc = Doc(vocab, words=tokens)
    try:
        doc.ents = biluo_tags_to_spans(doc, iob_to_biluo(tags))
    except ValueError as err:
        raise ValueError(f"invalid tags {tags}: {err}") from None
    return doc


def read_docs(vocab, path: Union[str, Path], limit: int = 0) -> List[Doc]:
    docs = []
    for tokens, tags in read_sentences(path):
        if limit and len(docs) >= limit:
            break
        docs.append(sentence_doc(vocab, tokens, tags))
    return docs


@registry.readers("spacy_seqgpt.ConllCorpus.v1")
def create_conll_corpus(path: Path, limit: int = 0) -> Callable[[Language], Iterator[Example]]:
    """Examples of the sentences of a CoNLL-style file (the first ``limit`` ones; 0: all).

    The predicted side keeps the file's tokens, as CoNLL evaluations do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"spacy_seqgpt.ConllCorpus.v1: no CoNLL file at {str(path)!r}")

    def corpus(nlp: Language) -> Iterator[Example]:
        for reference in read_docs(nlp.vocab, path, limit):
            predicted = Doc(
                nlp.vocab, words=[t.text for t in reference], spaces=[bool(t.whitespace_) for t in reference]
            )
            yield Example(predicted, reference)

    return corpus
