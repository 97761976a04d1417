"""``doc._.rel`` crosses every boundary a Doc crosses: ``to_bytes``, ``DocBin``, pickling, copies."""
import pickle

import pytest
import spacy
import srsly
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc, DocBin

from spacy_seqgpt.text.relations import Relations, span_keyed

NLP = spacy.blank("en")
WORDS = st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=5), min_size=2, max_size=12)
SCORES = st.dictionaries(st.text(min_size=1, max_size=12), st.floats(0, 1), max_size=3)


@st.composite
def docs_with_relations(draw):
    doc = Doc(NLP.vocab, words=draw(WORDS))
    bounds = st.tuples(st.integers(0, len(doc) - 1), st.integers(1, len(doc))).filter(lambda b: b[0] < b[1])
    pairs = st.tuples(bounds, bounds).map(lambda p: (*p[0], *p[1]))
    doc._.rel = draw(st.dictionaries(pairs, SCORES, max_size=6))
    return doc


def round_trips(doc):
    yield Doc(NLP.vocab).from_bytes(doc.to_bytes())
    yield next(DocBin(store_user_data=True).from_bytes(
        DocBin(docs=[doc], store_user_data=True).to_bytes()).get_docs(NLP.vocab))
    yield pickle.loads(pickle.dumps(doc))
    yield doc.copy()


@settings(deadline=None, max_examples=60)
@given(doc=docs_with_relations())
def test_relations_survive_bytes_docbins_pickling_and_copies(doc):
    expected = dict(doc._.rel)
    for again in round_trips(doc):
        assert again._.rel == expected and all(isinstance(key, tuple) for key in again._.rel)


def test_rel_is_a_live_mapping_of_the_doc():
    doc = NLP("Tim Cook runs Apple .")
    assert doc._.rel is None
    doc._.rel = {(0, 2, 3, 4): {"ceo of": 1.0}}
    doc._.rel[3, 4, 0, 2] = {}
    doc._.rel[0, 2, 3, 4]["founded"] = 0.25
    assert isinstance(doc._.rel, Relations) and sorted(doc._.rel) == [(0, 2, 3, 4), (3, 4, 0, 2)]
    assert Doc(NLP.vocab).from_bytes(doc.to_bytes())._.rel == {(0, 2, 3, 4): {"ceo of": 1.0, "founded": 0.25},
                                                                (3, 4, 0, 2): {}}
    del doc._.rel[3, 4, 0, 2]
    assert len(doc._.rel) == 1
    doc._.rel = None
    assert doc._.rel is None
    with pytest.raises(KeyError, match="keyed by tuples"):
        doc._.rel = {"0 2 3 4": {}}
    with pytest.raises(ValueError, match="must map span pairs"):
        doc._.rel = [((0, 2, 3, 4), {})]


def test_a_docbin_of_tuple_keyed_relations_is_read():
    """DocBins written before (and by spaCy's relation-extraction project, keyed by start tokens)
    hold a plain dict with tuple keys at the extension's place in user_data."""
    doc = NLP("Tim Cook runs Apple .")
    doc.ents = [doc.char_span(0, 8, label="PER"), doc.char_span(14, 19, label="ORG")]
    data = DocBin(docs=[doc], store_user_data=True)
    data.user_data[0] = srsly.msgpack_dumps({("._.", "rel", None, None): {(0, 3): {"ceo of": 1.0}}})
    read = next(DocBin(store_user_data=True).from_bytes(data.to_bytes()).get_docs(NLP.vocab))
    assert read._.rel == {(0, 3): {"ceo of": 1.0}}
    assert span_keyed(read, read._.rel) == {(0, 2, 3, 4): {"ceo of": 1.0}}
    assert Doc(NLP.vocab).from_bytes(read.to_bytes())._.rel == {(0, 3): {"ceo of": 1.0}}
