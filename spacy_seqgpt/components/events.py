"""``seqgpt_events``: event extraction as SeqGPT reduces it to its atomic tasks.

The three questions are ``templates`` (``[components.<name>.templates]``: ``trigger``,
``event_type``, ``argument``):

1. Triggers by extraction: each event type (``labels``) is queried as ``templates.trigger``
   ("Process_start event"), and the answer's spans are the triggers.
2. Optionally (``confirm``), each trigger's type is confirmed by classification:
   ``templates.event_type`` asks about the trigger in its context with the event types as
   labels; a trigger whose answer names another type is dropped (``stats["unconfirmed"]``).
3. Arguments by extraction: for each trigger, its type's ``roles`` are queried as
   ``templates.argument`` (naming the trigger) over the trigger's context.

Triggers go to ``doc.spans[spans_key]`` (label: event type, ``attrs["scores"]``), arguments to
``doc.spans[spans_key + "_arguments"]`` (label: role; ``attrs["triggers"]``: the index of each
argument's trigger, ``attrs["scores"]``), both replaced (the arguments name their triggers by
index, so the groups cannot be merged with others). ``doc._.events`` reads them back as a list of
``{"trigger": Span, "type": str, "score": float, "arguments": {role: [Span]}}`` (for another
``spans_key``, ``read_events(doc, key)`` does).
"""
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Sequence, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc, Span

from ..decoding import Asker, Decoding
from ..models import HFModel
from ..prompts import DEFAULT_LABEL_CHUNK_SIZE, EXTRACT, LabelSpec, chunk_labels, prompt_labels
from ..templates import TEMPLATES, check_template, fill_template, template_ref
from ..validation import check_key
from .classification import LabelClassification
from .extraction import SpanExtraction
from .pipe import SETTINGS, SeqGPTPipe
from .scorers import scorer_ref
from .spans import ScoredSpan, write_spans

DEFAULT_KEY = "events"
EVENTS_ATTR = "events"
EVENT_TEMPLATES = ("trigger", "event_type", "argument")  # [components.<name>.templates]


def read_events(doc: Doc, key: str = DEFAULT_KEY) -> List[dict]:
    """The events ``seqgpt_events`` wrote under ``key``, triggers with their arguments."""
    if key not in doc.spans:
        return []
    triggers = doc.spans[key]
    events = [{"trigger": span, "type": span.label_, "score": score, "arguments": {}}
              for span, score in zip(triggers, triggers.attrs.get("scores", [None] * len(triggers)))]
    arguments = doc.spans.get(f"{key}_arguments")
    if arguments is not None:
        for span, trigger in zip(arguments, arguments.attrs.get("triggers", [])):
            events[trigger]["arguments"].setdefault(span.label_, []).append(span)
    return events


if not Doc.has_extension(EVENTS_ATTR):
    Doc.set_extension(EVENTS_ATTR, getter=read_events)


@Language.factory(
    "seqgpt_events",
    assigns=["doc.spans"],
    default_config={"labels": [], "roles": {}, **SETTINGS, "confirm": False,
                    "label_chunk_size": DEFAULT_LABEL_CHUNK_SIZE,
                    "templates": {name: template_ref(name) for name in EVENT_TEMPLATES},
                    "spans_key": DEFAULT_KEY, "threshold": 0.0, "scorer": scorer_ref("events")},
    default_score_weights={f"spans_{DEFAULT_KEY}_f": 1.0, f"spans_{DEFAULT_KEY}_p": 0.0, f"spans_{DEFAULT_KEY}_r": 0.0,
                           f"spans_{DEFAULT_KEY}_arguments_f": 1.0, f"spans_{DEFAULT_KEY}_arguments_p": 0.0,
                           f"spans_{DEFAULT_KEY}_arguments_r": 0.0},
)
def make_seqgpt_events(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]],
                       roles: Dict[str, Union[List[str], Dict[str, str]]], model: Union[str, HFModel],
                       decoding: Decoding, confirm: bool, label_chunk_size: int, templates: Dict[str, Any],
                       spans_key: str, threshold: float, scorer: Callable) -> "SeqGPTEvents":
    return SeqGPTEvents(nlp.vocab, name, labels=labels, roles=roles, model=model, decoding=decoding, confirm=confirm,
                        label_chunk_size=label_chunk_size, templates=templates, spans_key=spans_key,
                        threshold=threshold, scorer=scorer)


class Events(NamedTuple):
    """A Doc's triggers, and its arguments as ``(trigger index, span labelled with its role, score)``."""

    triggers: List[ScoredSpan]
    arguments: List[Tuple[int, Span, float]]


class SeqGPTEvents(SeqGPTPipe):
    """Event triggers, their types and their arguments (see the module's docs for the steps).

    ``labels``: the event types, a list or ``{type: prompt text}``; ``roles``: ``{type: [role, ...]}``
    (or ``{type: {role: prompt text}}``), the argument roles asked for each trigger of the type.
    Windows and alignment are ``seqgpt_ner``'s; triggers and arguments below ``threshold`` are not
    written (nor are the arguments of such triggers asked for). A trigger no window holds is
    counted in ``stats["over_window"]``.
    """

    def __init__(self, vocab, name: str, *, labels: LabelSpec, roles: Mapping, confirm: bool, label_chunk_size: int,
                 templates: Mapping[str, str], spans_key: str, threshold: float, **settings):
        super().__init__(vocab, name, threshold=threshold, **settings)
        self.types = prompt_labels(labels, component=name)
        templates = _event_templates(templates, name)
        queries = prompt_labels(
            {label: fill_template(templates["trigger"], type=text) for label, text in self.types.items()},
            component=name)
        self.trigger_chunks = chunk_labels(list(queries.values()), label_chunk_size)
        self.label_chunk_size = label_chunk_size
        self.spans_key = check_key(spans_key, name, "spans_key", optional=False)
        if not isinstance(roles, Mapping):
            raise ValueError(f"{name}: roles must map event types to their roles, got {roles!r}")
        unknown = sorted(set(roles) - set(self.types))
        if unknown:
            raise ValueError(
                f"{name}: roles are given for {unknown}, which are not among the labels {list(self.types)}"
            )
        self.roles = {event_type: prompt_labels(spec, component=f"{name} (roles of {event_type})")
                      for event_type, spec in roles.items()}
        self.confirm = bool(confirm)
        self.type_template, self.argument_template = templates["event_type"], templates["argument"]
        self.extraction = SpanExtraction(name, {text: label for label, text in queries.items()},
                                         decoding=self.decoding, threshold=self.threshold, stats=self.stats)
        self.type_question = LabelClassification(self.types, multi_label=False, probabilities=False)

    @property
    def labels(self) -> tuple:
        return tuple(self.types)

    def predict(self, docs: Sequence[Doc]) -> List[Events]:
        asker = self.asker()
        requests = asker.windows(docs, lambda _: (EXTRACT, self.trigger_chunks))
        triggers = [_best_once(found) for found in self.extraction.ask(asker, docs, requests)]
        if self.confirm:
            triggers = self._confirmed(asker, docs, triggers)
        return [Events(found, args) for found, args in zip(triggers, self._arguments(asker, docs, triggers))]

    def set_annotations(self, docs: Sequence[Doc], predictions: Sequence[Events]) -> None:
        for doc, (triggers, arguments) in zip(docs, predictions):
            written = self.kept([(number, score) for number, (_, score) in enumerate(triggers)])
            index = {number: i for i, (number, _) in enumerate(written)}  # a trigger's index among those written
            kept = self.kept([((index[trigger], span), score) for trigger, span, score in arguments
                              if trigger in index])
            write_spans(doc, self.spans_key, [(triggers[number][0], score) for number, score in written],
                        overwrite=True)
            write_spans(doc, f"{self.spans_key}_arguments", [(span, score) for (_, span), score in kept],
                        overwrite=True, triggers=[trigger for (trigger, _), _ in kept])

    def _confirmed(self, asker: Asker, docs: Sequence[Doc], triggers: List[List[ScoredSpan]]
                   ) -> List[List[ScoredSpan]]:
        """The triggers whose type the classification question names too."""
        requests = asker.about_spans(docs, self.type_template,
                                     lambda i, doc: enumerate({"trigger": span} for span, _ in triggers[i]),
                                     list(self.types.values()))
        keep = set()
        for request, row in zip(requests, self.type_question.values(asker, docs, requests)):
            span = triggers[request.doc_index][request.subject][0]
            if row.any() and self.type_question.labels[int(row.argmax())] == span.label_:
                keep.add((request.doc_index, request.subject))
            else:
                self.stats["unconfirmed"] += 1
        return [[item for number, item in enumerate(found) if (doc_index, number) in keep]
                for doc_index, found in enumerate(triggers)]

    def _arguments(self, asker: Asker, docs: Sequence[Doc], triggers: List[List[ScoredSpan]]
                   ) -> List[List[Tuple[int, Span, float]]]:
        """``(trigger index, argument span labelled with its role, score)`` per Doc, for the
        triggers at ``threshold`` whose type has roles."""
        def queries(doc_index: int, doc: Doc):
            for number, (span, score) in enumerate(triggers[doc_index]):
                roles = self.roles.get(span.label_)
                if roles and score >= self.threshold:
                    yield number, span, {fill_template(self.argument_template, role=text, trigger=span.text,
                                                       type=self.types[span.label_]): role
                                         for role, text in roles.items()}

        requests = asker.in_context(docs, queries, self.label_chunk_size)
        found: List[List[Tuple[int, Span, float]]] = [[] for _ in docs]
        answers = self.extraction.answers(asker, docs, requests)
        for request, (span, score) in self.extraction.answered(docs, requests, answers):
            found[request.doc_index].append((request.subject, span, score))
        return found

    def scorer_settings(self) -> dict:
        return {"spans_key": self.spans_key}


def _event_templates(templates: Mapping[str, str], owner: str) -> Dict[str, str]:
    """The three questions, each checked to hold its placeholders; a missing or unknown one is named."""
    if not isinstance(templates, Mapping) or set(templates) != set(EVENT_TEMPLATES):
        given = sorted(templates) if isinstance(templates, Mapping) else templates
        raise ValueError(f"{owner}: 'templates' must give the questions {list(EVENT_TEMPLATES)}, got {given!r}.")
    return {name: check_template(templates[name], TEMPLATES[name][1], owner, f"templates.{name}")
            for name in EVENT_TEMPLATES}


def _best_once(found: List[ScoredSpan]) -> List[ScoredSpan]:
    """A Doc's triggers in text order, each once (its best score where windows overlap)."""
    best: Dict[tuple, ScoredSpan] = {}
    for span, score in found:
        key = (span.start, span.end, span.label_)
        if key not in best or best[key][1] < score:
            best[key] = (span, score)
    return sorted(best.values(), key=lambda item: (item[0].start, item[0].end, item[0].label_))

