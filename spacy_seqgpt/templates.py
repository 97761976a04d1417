"""The questions SeqGPT's span tasks ask, as versioned templates.

SeqGPT reduces span-conditioned tasks (typing, relations, event types and arguments) to its two
atomic tasks by asking a question that names the spans. Its exact wording for these is not
published, so each is a setting of its component, filled by :func:`fill_template`. The defaults
are registered functions (``@misc = "spacy_seqgpt.typing_template.v1"``): a later wording ships
as ``v2`` and configs that name ``v1`` keep asking what they were trained on.
"""
import re
from typing import Sequence

from spacy.util import registry

from .prompts import LINE_BREAKS

NO_RELATION = "no relation"  # seqgpt_rel's answer for a pair with none of the relation labels

# name: (wording, placeholders it must hold)
TEMPLATES = {
    "typing": ("what is the type of {span} in {text}", ("span", "text")),
    "relation": ("what is the relation between {head} and {tail} in {text}", ("head", "tail", "text")),
    "trigger": ("{type} event", ("type",)),
    "event_type": ("what is the event type of {trigger} in {text}", ("trigger", "text")),
    "argument": ("{role} of {trigger}", ("role", "trigger")),
    # SeqGPT.classify_pairs: naming both parts lets the model read them apart (a line break
    # would become a space in the prompt's input field)
    "pair": ("Premise: {first} Hypothesis: {second}", ("first", "second")),
}
TYPING_TEMPLATE, RELATION_TEMPLATE, TRIGGER_TEMPLATE, EVENT_TYPE_TEMPLATE, ARGUMENT_TEMPLATE = (
    TEMPLATES[name][0] for name in ("typing", "relation", "trigger", "event_type", "argument"))
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def template_ref(name: str) -> dict:
    """A default config's reference to the registered template ``name``."""
    return {"@misc": f"spacy_seqgpt.{name}_template.v1"}


def _register(name: str, wording: str) -> None:
    registry.misc.register(f"spacy_seqgpt.{name}_template.v1", func=lambda: wording)


for _name, (_wording, _) in TEMPLATES.items():
    _register(_name, _wording)


def fill_template(template: str, **fields: str) -> str:
    """``template`` with each ``{field}`` replaced in one pass (a span or a text that itself holds
    ``{text}`` is left as written)."""
    return _PLACEHOLDER.sub(lambda m: fields.get(m.group(1), m.group(0)), template)


def check_template(template: object, fields: Sequence[str], owner: str, setting: str = "template") -> str:
    """``template`` if it is one line holding every ``{field}``, else a ValueError naming ``setting``."""
    if (not isinstance(template, str) or any(f"{{{field}}}" not in template for field in fields)
            or any(char in LINE_BREAKS for char in template)):
        raise ValueError(f"{owner}: '{setting}' must be one line holding {', '.join(f'{{{f}}}' for f in fields)}, "
                         f"got {template!r}.")
    return template
