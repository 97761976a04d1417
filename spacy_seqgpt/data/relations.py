"""Relation corpora as SeqGPT's atomic tasks, the way the paper builds its relation data.

Relation extraction is extraction of the entities, then classification of each ordered pair
of entities by a question about the pair (``templates.RELATION_TEMPLATE``), answered with the
relation labels that hold or ``templates.NO_RELATION``. ``seqgpt_rel`` asks the same question,
so a model trained on these records answers it.

Inputs: CrossRE's JSON lines (one sentence per line, inclusive token offsets) and spaCy DocBins
whose Docs carry ``doc._.rel`` (saved with ``store_user_data=True``). Both become Docs with
``doc.ents`` and ``doc._.rel``; CrossRE's Docs are one sentence each.
"""
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from ..prompts import CLASSIFY, EXTRACT
from ..templates import NO_RELATION, RELATION_TEMPLATE, fill_template
from ..text.relations import REL_ATTR, candidate_pairs, pair_key, span_keyed
from .label_words import label_word
from .records import GoldCorpus, GoldExample, json_line

DEFAULT_MAX_DISTANCE = 100  # seqgpt_rel's default, for Docs without sentences
# CrossRE's relation types (its README), asked in every domain's records even where a split lacks some.
CROSSRE_RELATIONS = ("part-of", "type-of", "related-to", "named", "origin", "role", "temporal", "physical",
                     "artifact", "compare", "general-affiliation", "opposite", "social", "win-defeat",
                     "cause-effect", "usage", "topic")


def read_crossre(path: Path, label_map: Optional[Mapping[str, str]] = None, lang: str = "en") -> List:
    """CrossRE's sentences as Docs: entities in ``doc.ents`` (readable label words), relations in
    ``doc._.rel`` (``{(head start, head end, tail start, tail end): {label: 1.0}}``). A row that
    is not CrossRE's is a ValueError naming its line and what is wrong."""
    import spacy
    from spacy.tokens import Doc, Span

    vocab = spacy.blank(lang).vocab
    docs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        row = json_line(line, where)
        if not isinstance(row, dict) or not {"sentence", "ner", "relations"} <= set(row):
            raise ValueError(f"{where}: expected CrossRE's JSON object with 'sentence', 'ner' and 'relations'")
        words, entities, relations = row["sentence"], row["ner"], row["relations"]
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w and not w.isspace()
                                                                 for w in words):
            raise ValueError(f"{where}: 'sentence' must be a list of tokens (non-empty strings), got {words!r:.80}")
        doc = Doc(vocab, words=words)
        ents = []
        for entity in _rows(entities, "ner", where):
            start, end, tag = _token_range(entity, 3, len(words), where, "entity")
            ents.append(Span(doc, start, end + 1, label=label_word(_tag(tag, where), label_map)))
        try:
            doc.ents = ents
        except ValueError:
            raise ValueError(f"{where}: the entities {entities!r} overlap") from None
        spans = {(ent.start, ent.end - 1): ent for ent in doc.ents}
        rel = {}
        for relation in _rows(relations, "relations", where):
            head_start, head_end, _ = _token_range(relation, 5, len(words), where, "relation")
            tail_start, tail_end, _ = _token_range(relation[2:], 3, len(words), where, "relation")
            for bounds in ((head_start, head_end), (tail_start, tail_end)):
                if bounds not in spans:
                    raise ValueError(f"{where}: relation argument {list(bounds)} is not one of the entities "
                                     f"{entities}")
            key = pair_key(spans[head_start, head_end], spans[tail_start, tail_end])
            rel.setdefault(key, {})[label_word(_tag(relation[4], where), label_map)] = 1.0
        doc._.set(REL_ATTR, rel)
        docs.append(doc)
    return docs


def _rows(value, field: str, where: str) -> list:
    if not isinstance(value, list) or not all(isinstance(item, list) for item in value):
        raise ValueError(f"{where}: '{field}' must be a list of lists, got {value!r:.80}")
    return value


def _token_range(row: list, length: int, n_words: int, where: str, what: str) -> Tuple[int, int, object]:
    """``(start, end, next field)`` of a CrossRE row whose first two fields are inclusive token offsets."""
    if len(row) < length:
        raise ValueError(f"{where}: the {what} {row!r} has fewer than {length} fields")
    start, end = row[0], row[1]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in (start, end)) or not 0 <= start <= end < n_words:
        raise ValueError(f"{where}: the {what} {row!r} does not name tokens of the {n_words}-token sentence "
                         "(inclusive offsets from 0)")
    return start, end, row[2]


def _tag(tag: object, where: str) -> str:
    if not isinstance(tag, str) or not tag.strip():
        raise ValueError(f"{where}: a label must be a non-empty string, got {tag!r}")
    return tag


def read_relation_docbin(path: Path, lang: str = "en") -> List:
    """The Docs of a DocBin whose Docs carry ``doc._.rel``, keyed by span bounds (or by the start
    tokens of entities, as spaCy's relation-extraction project keys it)."""
    import spacy
    from spacy.tokens import DocBin

    docs = list(DocBin(store_user_data=True).from_disk(path).get_docs(spacy.blank(lang).vocab))
    for number, doc in enumerate(docs):
        doc._.set(REL_ATTR, span_keyed(doc, doc._.get(REL_ATTR), f"{path}: Doc {number}") or None)
    return docs


def has_relations(docs: Iterable) -> bool:
    return any(doc._.get(REL_ATTR) for doc in docs)


def relation_corpora(docs: List, lang: str = "en", *, labels: Sequence[str] = (), template: str = RELATION_TEMPLATE,
                     no_relation: str = NO_RELATION, max_distance: int = DEFAULT_MAX_DISTANCE
                     ) -> Tuple[GoldCorpus, GoldCorpus]:
    """The entity extraction corpus and the pair classification corpus of ``docs``.

    A pair example asks ``template`` about each candidate pair (``seqgpt_rel``'s pairs: same
    sentence, else within ``max_distance`` tokens), with the pair's sentence (or the whole Doc)
    as ``{text}``; its gold labels are the relations that hold, else ``no_relation``. Each pair
    example keeps the pair in ``meta["pair"]`` (character offsets of the spans in the example's
    copy of the context) for triple F1. ``labels``: relation labels asked even where no Doc has them."""
    if "{text}" not in template:
        raise ValueError(f"the relation template must contain {{text}}, got {template!r}")
    entities, pairs = [], []
    entity_labels, relation_labels = {}, dict.fromkeys(labels)
    for doc in docs:
        entity_labels.update(dict.fromkeys(ent.label_ for ent in doc.ents))
        entities.append(GoldExample(doc.text, spans=[(e.start_char, e.end_char, e.label_) for e in doc.ents]))
        rel = doc._.get(REL_ATTR) or {}
        for scores in rel.values():
            relation_labels.update(dict.fromkeys(label for label, score in scores.items() if score >= 0.5))
        for head, tail in candidate_pairs(doc, list(doc.ents), max_distance):
            context = head.sent if doc.has_annotation("SENT_START") else doc[:]
            gold = [label for label, score in rel.get(pair_key(head, tail), {}).items() if score >= 0.5]
            # where the context starts in the question: after the filled text before {text}
            offset = context.start_char - len(fill_template(template[: template.index("{text}")], head=head.text,
                                                            tail=tail.text))
            pairs.append(GoldExample(
                fill_template(template, head=head.text, tail=tail.text, text=context.text),
                cats=gold or [no_relation],
                meta={"pair": {"head": [head.start_char - offset, head.end_char - offset],
                               "tail": [tail.start_char - offset, tail.end_char - offset],
                               "no_relation": no_relation}}))
    if no_relation in relation_labels:
        raise ValueError(f"the no-relation answer {no_relation!r} is also a relation label of the corpus")
    return (GoldCorpus(EXTRACT, lang, list(entity_labels), entities),
            GoldCorpus(CLASSIFY, lang, [*relation_labels, no_relation], pairs))
