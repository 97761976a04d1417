"""How a SeqGPT component decodes: the ``[components.<name>.decoding]`` block of a pipeline config.

    [components.seqgpt_ner.decoding]
    @seqgpt_decoding = "spacy_seqgpt.Decoding.v1"
    batch_size = 16
    max_new_tokens = 256
    ...

:class:`Decoding` is the registered function (its fields are the block's settings, and
spaCy's config validation names a typo among them), the object the components, ``SeqGPT``,
``seqgpt evaluate`` and the :class:`~spacy_seqgpt.decoding.Decoder` read, and frozen, so one
block can be handed around without being changed on the way.
"""
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping, Optional, Union

from spacy.util import registry

from ..validation import check_positive_int

REGISTRY = "seqgpt_decoding"
if not hasattr(registry, REGISTRY):
    registry.create(REGISTRY)
DEFAULT_DRAFT_TOKENS = 8


@dataclass(frozen=True)
class Decoding:
    """``batch_size``: prompts decoded together; ``max_new_tokens``: the longest answer;
    ``num_beams``: 1 is greedy; ``max_input_tokens``: the longest window of text a prompt holds
    (longer Docs are cut into windows); ``constrained``: answers follow the answer grammars;
    ``jump_forward`` and ``speculate``: greedy decoding's shortcuts, which write what
    step-by-step decoding would (off: it goes step by step), ``speculate`` guessing at most
    ``draft_tokens`` tokens a pass; ``span_search``: an extraction answer also holds every span
    whose probability as its label's first value reaches the component's ``threshold``, found by
    a search over the answer grammar beside greedy decoding's answer (``span_search.py``): the
    recall knob."""

    batch_size: int = 16
    max_new_tokens: int = 256
    num_beams: int = 1
    max_input_tokens: int = 512
    constrained: bool = True
    jump_forward: bool = True
    speculate: bool = True
    draft_tokens: int = DEFAULT_DRAFT_TOKENS
    span_search: bool = False

    def __post_init__(self):
        for key in ("batch_size", "max_new_tokens", "num_beams", "max_input_tokens", "draft_tokens"):
            check_positive_int(getattr(self, key), key, "decoding")
        for key in ("constrained", "jump_forward", "speculate", "span_search"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"decoding: '{key}' must be true or false, got {getattr(self, key)!r}.")
        if self.span_search and (self.num_beams != 1 or not self.constrained):
            raise ValueError("decoding: 'span_search' searches the answer grammar beside greedy decoding's answer: "
                             f"it needs num_beams = 1 and constrained = true (got num_beams = {self.num_beams}, "
                             f"constrained = {str(self.constrained).lower()}).")

    def check_floor(self, threshold: float, owner: str) -> None:
        """With ``span_search``, ``threshold`` is the search's floor: refused unless above 0 (and at
        most 1), naming ``owner``."""
        if self.span_search and not 0 < threshold <= 1:
            raise ValueError(f"{owner}: decoding.span_search finds every span at least 'threshold' likely, so it "
                             f"needs a threshold above 0 and at most 1 (got {threshold!r}); 0.1 is a start, lower "
                             "finds more.")

    def but(self, **changes) -> "Decoding":
        """The same settings with ``changes`` (checked as the block is)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


getattr(registry, REGISTRY).register("spacy_seqgpt.Decoding.v1", func=Decoding)

SETTINGS = tuple(f.name for f in fields(Decoding))


def decoding_block(**defaults) -> dict:
    """A component's ``default_config`` decoding block, with this component's ``defaults``."""
    unknown = set(defaults) - set(SETTINGS)
    if unknown:
        raise TypeError(f"not decoding settings: {sorted(unknown)}")
    values = {f.name: defaults.get(f.name, f.default) for f in fields(Decoding)}
    return {"@seqgpt_decoding": "spacy_seqgpt.Decoding.v1", **values}


def decoding_settings(decoding: Union[None, Decoding, Mapping[str, Any]], owner: str,
                      defaults: Optional[Decoding] = None) -> Decoding:
    """A :class:`Decoding` from the block, or from a dict of some of its settings (the rest:
    ``defaults``, else the block's defaults); anything else is refused, naming ``owner``."""
    base = defaults or Decoding()
    if decoding is None:
        return base
    if isinstance(decoding, Decoding):
        return decoding
    if isinstance(decoding, Mapping):
        unknown = sorted(set(decoding) - set(SETTINGS))
        if unknown:
            raise ValueError(f"{owner}: {unknown} are not decoding settings; the decoding block has {list(SETTINGS)}.")
        return base.but(**decoding)
    raise ValueError(f"{owner}: 'decoding' must be a [decoding] block (@seqgpt_decoding = "
                     f"\"spacy_seqgpt.Decoding.v1\") or a dict of its settings, got {decoding!r}.")
