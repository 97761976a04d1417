"""Readable label words for corpus tag names: the model reads ``person``, not ``PER``.

SeqGPT is open-domain: it answers for whatever words it is given, so labels are written as
a person would write them. Known tag sets are listed; any other tag is made readable by
rule (``card_arrival`` -> ``card arrival``, ``creative-work`` -> ``creative work``).
"""
import re
import random
from typing import Dict, List, Mapping, Optional, Tuple

KNOWN: Dict[str, str] = {
    # CoNLL-2003 and most newswire sets
    "PER": "person", "ORG": "organization", "LOC": "location", "MISC": "miscellaneous", "GPE": "geo-political entity",
    # CrossNER: the single-word compounds of its tag set
    "academicjournal": "academic journal", "astronomicalobject": "astronomical object",
    "chemicalcompound": "chemical compound", "chemicalelement": "chemical element",
    "literarygenre": "literary genre", "musicalartist": "musical artist",
    "musicalinstrument": "musical instrument", "musicgenre": "music genre", "politicalparty": "political party",
    "programlang": "programming language", "organisation": "organization", "misc": "miscellaneous",
    # Weibo NER (Chinese): named (NAM) and nominal (NOM) mentions
    "PER.NAM": "人名", "PER.NOM": "人物指代", "LOC.NAM": "地名", "LOC.NOM": "地点指代",
    "ORG.NAM": "机构名", "ORG.NOM": "机构指代", "GPE.NAM": "行政区名", "GPE.NOM": "行政区指代",
}
_SEPARATORS = re.compile(r"[_\-]+")
# Other words a person might ask for the entity types of the held-in sets with (the SeqGPT paper's
# point: a model that has seen a label under many names answers for names it has not seen).
# A training record may ask with one of these instead of the dataset's word (``label_variants``).
VARIANTS: Dict[str, Tuple[str, ...]] = {
    "person": ("people", "person name", "name of a person", "human", "individual"),
    "organization": ("organisation", "institution", "organization name", "company or institution"),
    "location": ("place", "place name", "geographic location", "location name"),
    "miscellaneous": ("other entity", "other named entity", "misc"),
    "corporation": ("company", "business", "firm", "company name"),
    "product": ("product name", "commercial product", "brand or product"),
    "creative work": ("title of a work", "work of art", "creative title"),
    "group": ("group name", "collective", "band or team"),
}


def label_word(tag: str, overrides: Optional[Mapping[str, str]] = None) -> str:
    """The readable word for ``tag``: ``overrides`` first, then the known sets, then by rule."""
    if overrides and tag in overrides:
        return overrides[tag]
    if tag in KNOWN:
        return KNOWN[tag]
    return _SEPARATORS.sub(" ", tag).strip().lower() if tag.isascii() else tag


def reworded_labels(labels: List[str], rng: random.Random) -> Dict[str, str]:
    """A word for each of ``labels`` to ask with: one of its ``VARIANTS`` or itself, at random,
    no two the same (case-folded) and none another label's own word."""
    taken = {label.casefold() for label in labels}
    chosen = {}
    for label in labels:
        options = [word for word in VARIANTS.get(label, ()) if word.casefold() not in taken]
        word = rng.choice([label, *options])
        taken.add(word.casefold())
        chosen[label] = word
    return chosen

