"""``SeqGPT(model).extract / classify / classify_pairs``: the components' decoding without spaCy objects.

Each call runs the SeqGPT components on blank Docs of the given texts, so answers are exactly
what ``seqgpt_ner`` and ``seqgpt_textcat`` write (same windows, prompts, grammars, scores,
batching across texts); pipelines are kept per label set and share one loaded model.
"""
from typing import Dict, List, Sequence, Union

import spacy
from spacy.language import Language

from ..decoding import Decoding
from ..decoding.settings import SETTINGS as DECODING_SETTINGS, decoding_settings
from ..models import DEFAULT_MODEL, HFModel
from ..templates import TEMPLATES, check_template, fill_template
from ..validation import lone_surrogate

PAIR_TEMPLATE, PAIR_FIELDS = TEMPLATES["pair"]
_SPANS_KEY = "seqgpt"


def _texts(texts: Sequence[str], name: str) -> List[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, got one string: wrap it in a list ([{texts[:30]!r}])")
    texts = list(texts)
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise TypeError(f"{name} must hold strings; items {bad[:5]} are {type(texts[bad[0]]).__name__}")
    for i, text in enumerate(texts):
        surrogate = lone_surrogate(text)
        if surrogate is not None:  # spaCy's tokenizer would fail on it with an encoding error
            raise ValueError(f"{name}[{i}] holds a lone surrogate ({surrogate}), which is not Unicode text: decode "
                             "its source with errors='replace' (or fix the producer's encoding)")
    return texts


class SeqGPT:
    """Extraction and classification with labels chosen per call.

    ``model``: a hub id or local folder, a dict of ``HFModel`` settings, or an ``HFModel``.
    ``decoding``: the components' decoding block, a :class:`~spacy_seqgpt.decoding.Decoding` or
    a dict of some of its settings (``{"batch_size": 16, "max_new_tokens": 64}``). ``lang``: the
    language of the blank Docs (spans are aligned to its tokens).
    """

    def __init__(self, model: Union[str, Dict, HFModel] = DEFAULT_MODEL, *,
                 decoding: Union[Decoding, Dict, None] = None, lang: str = "en", **retired):
        if retired:  # 0.2 took the decoding settings as keywords
            moved = sorted(set(retired) & set(DECODING_SETTINGS))
            raise TypeError(f"SeqGPT() got {sorted(retired)}: "
                            + (f"decoding settings go in one block now, SeqGPT(model, decoding={{{moved[0]!r}: ...}})"
                               if moved else "not a setting of SeqGPT (model, decoding, lang)"))
        self.model = model
        self.lang = lang
        self.decoding = decoding_settings(decoding, "SeqGPT")
        self._pipelines: Dict[tuple, Language] = {}

    def _pipeline(self, factory: str, labels: Sequence[str], extra: Dict) -> Language:
        labels = _texts(labels, "labels")  # one string is one label's name, not its letters
        key = (factory, tuple(labels), tuple(sorted(extra.items())))
        if key not in self._pipelines:
            nlp = spacy.blank(self.lang)
            nlp.add_pipe(factory, config={"model": self.model, "labels": list(labels),
                                          "decoding": self.decoding.to_dict(), **extra})
            self._pipelines[key] = nlp
        return self._pipelines[key]

    def extract(self, texts: Sequence[str], labels: Sequence[str], *, threshold: float = 0.0) -> List[List[Dict]]:
        """For each text, the spans found for ``labels``: ``{"start", "end", "label", "text", "score"}``
        with character offsets, in text order; spans of different labels may overlap. Spans scored
        below ``threshold`` are left out; with ``decoding={"span_search": True}`` every span at least
        ``threshold`` likely is found, not only those of the greedy answer (lower finds more)."""
        nlp = self._pipeline("seqgpt_ner", labels, {"spans_key": _SPANS_KEY, "threshold": threshold})
        results = []
        for doc in nlp.pipe(_texts(texts, "texts")):
            group = doc.spans[_SPANS_KEY]
            scores = group.attrs.get("scores", [None] * len(group))
            results.append([{"start": span.start_char, "end": span.end_char, "label": span.label_,
                             "text": span.text, "score": score} for span, score in zip(group, scores)])
        return results

    def classify(self, texts: Sequence[str], labels: Sequence[str], *, multi_label: bool = False,
                 probabilities: bool = False) -> List[Dict[str, float]]:
        """For each text, ``{label: score}`` over ``labels`` as ``seqgpt_textcat`` writes ``doc.cats``."""
        nlp = self._pipeline("seqgpt_textcat", labels, {"multi_label": multi_label, "probabilities": probabilities})
        return [dict(doc.cats) for doc in nlp.pipe(_texts(texts, "texts"))]

    def classify_pairs(self, firsts: Sequence[str], seconds: Sequence[str], labels: Sequence[str], *,
                       template: str = PAIR_TEMPLATE, **options) -> List[Dict[str, float]]:
        """Classify text pairs (NLI: premises and hypotheses), each joined by ``template``."""
        firsts, seconds = _texts(firsts, "firsts"), _texts(seconds, "seconds")
        if len(firsts) != len(seconds):
            raise ValueError(f"pairs need as many first texts as second ones: got {len(firsts)} and {len(seconds)}")
        check_template(template, PAIR_FIELDS, "classify_pairs")
        return self.classify([self.pair_text(a, b, template) for a, b in zip(firsts, seconds)], labels, **options)

    @staticmethod
    def pair_text(first: str, second: str, template: str = PAIR_TEMPLATE) -> str:
        """The input text of one pair (what ``classify_pairs`` asks about)."""
        return fill_template(template, first=first, second=second)  # one pass: a text's own braces stay
