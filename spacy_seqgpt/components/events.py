"""``seqgpt_events``: event extraction as SeqGPT reduces it to its atomic tasks.

1. Triggers by extraction: each event type (``labels``) is queried as ``trigger_template``
   ("Process_start event"), and the answer's spans are the triggers.
2. Optionally (``confirm``), each trigger's type is confirmed by classification: ``type_template``
   asks about the trigger in its context with the event types as labels; a trigger whose answer
   names another type is dropped (``stats["unconfirmed"]``).
3. Arguments by extraction: for each trigger, its type's ``roles`` are queried as
   ``argument_template`` (naming the trigger) over the trigger's context.

Triggers go to ``doc.spans[spans_key]`` (label: event type, ``attrs["scores"]``), arguments to
``doc.spans[spans_key + "_arguments"]`` (label: role; ``attrs["triggers"]``: the index of each
argument's trigger, ``attrs["scores"]``). ``doc._.events`` reads them back as a list of
``{"trigger": Span, "type": str, "score": float, "arguments": {role: [Span]}}`` (for another
``spans_key``, ``read_events(doc, key)`` does).
"""
from typing import Callable, Dict, List, Mapping, NamedTuple, Sequence, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc, Span, SpanGroup

from ..decoding import Request
from ..decoding.queries import LINE_BREAKS_TO_SPACES
from ..models import HFModel
from ..prompts import DEFAULT_LABEL_CHUNK_SIZE, EXTRACT, LabelSpec, check_label, chunk_labels, prompt_labels
from ..templates import TEMPLATES, check_template, fill_template, template_ref
from ..validation import check_key
from .classification import LabelClassification
from .extraction import SpanExtraction
from .pipe import SETTINGS, SeqGPTPipe
from .scorers import scorer_ref
from .span_questions import SpanContexts, span_requests
from .spans import ScoredSpan

DEFAULT_KEY = "events"
EVENTS_ATTR = "events"


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
                    "label_chunk_size": DEFAULT_LABEL_CHUNK_SIZE, "trigger_template": template_ref("trigger"),
                    "type_template": template_ref("event_type"), "argument_template": template_ref("argument"),
                    "spans_key": DEFAULT_KEY, "threshold": 0.0, "scorer": scorer_ref("events")},
    default_score_weights={f"spans_{DEFAULT_KEY}_f": 1.0, f"spans_{DEFAULT_KEY}_p": 0.0, f"spans_{DEFAULT_KEY}_r": 0.0,
                           f"spans_{DEFAULT_KEY}_arguments_f": 1.0, f"spans_{DEFAULT_KEY}_arguments_p": 0.0,
                           f"spans_{DEFAULT_KEY}_arguments_r": 0.0},
)
def make_seqgpt_events(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]],
                       roles: Dict[str, Union[List[str], Dict[str, str]]], model: Union[str, HFModel],
                       batch_size: int, max_new_tokens: int, num_beams: int, max_input_tokens: int, constrained: bool,
                       jump_forward: bool, speculate: bool, draft_tokens: int, confirm: bool, label_chunk_size: int,
                       trigger_template: str, type_template: str, argument_template: str, spans_key: str,
                       threshold: float, scorer: Callable) -> "SeqGPTEvents":
    return SeqGPTEvents(nlp.vocab, name, labels=labels, roles=roles, model=model, batch_size=batch_size,
                        max_new_tokens=max_new_tokens, num_beams=num_beams, max_input_tokens=max_input_tokens,
                        constrained=constrained, jump_forward=jump_forward, speculate=speculate,
                        draft_tokens=draft_tokens, confirm=confirm, label_chunk_size=label_chunk_size,
                        trigger_template=trigger_template, type_template=type_template,
                        argument_template=argument_template, spans_key=spans_key, threshold=threshold,
                        scorer=scorer)


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
                 trigger_template: str, type_template: str, argument_template: str, spans_key: str,
                 threshold: float, **settings):
        super().__init__(vocab, name, threshold=threshold, **settings)
        self.types = prompt_labels(labels, component=name)
        check_template(trigger_template, TEMPLATES["trigger"][1], name, "trigger_template")
        queries = prompt_labels(
            {label: fill_template(trigger_template, type=text) for label, text in self.types.items()}, component=name
        )
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
        self.type_template = check_template(type_template, TEMPLATES["event_type"][1], name, "type_template")
        self.argument_template = check_template(argument_template, TEMPLATES["argument"][1], name, "argument_template")
        self.extraction = SpanExtraction(name, {text: label for label, text in queries.items()},
                                         constrained=self.constrained, stats=self.stats)
        self.type_question = LabelClassification(self.types, multi_label=False, scoring=False)

    @property
    def labels(self) -> tuple:
        return tuple(self.types)

    def predict(self, docs: Sequence[Doc]) -> List[Events]:
        requests = self.window_requests(docs, EXTRACT, lambda _: self.trigger_chunks)
        answers = self.ask(docs, requests, self.extraction.grammar)
        triggers = [_best_once(found) for found in self.extraction.per_doc(docs, requests, answers)]
        if self.confirm:
            triggers = self._confirmed(docs, triggers)
        return [Events(found, args) for found, args in zip(triggers, self._arguments(docs, triggers))]

    def set_annotations(self, docs: Sequence[Doc], predictions: Sequence[Events]) -> None:
        for doc, (triggers, arguments) in zip(docs, predictions):
            written = self.kept([(number, score) for number, (_, score) in enumerate(triggers)])
            index = {number: i for i, (number, _) in enumerate(written)}  # a trigger's index among those written
            kept = self.kept([((index[trigger], span), score) for trigger, span, score in arguments
                              if trigger in index])
            self._write(doc, self.spans_key, [triggers[number][0] for number, _ in written],
                        scores=[score for _, score in written])
            self._write(doc, f"{self.spans_key}_arguments", [span for (_, span), _ in kept],
                        scores=[score for _, score in kept], triggers=[trigger for (trigger, _), _ in kept])

    @staticmethod
    def _write(doc: Doc, key: str, spans: List[Span], **attrs) -> None:
        group = SpanGroup(doc, name=key, spans=spans)
        group.attrs.update(attrs)
        doc.spans[key] = group

    def _confirmed(self, docs: Sequence[Doc], triggers: List[List[ScoredSpan]]) -> List[List[ScoredSpan]]:
        """The triggers whose type the classification question names too."""
        requests = span_requests(self, docs, self.type_template,
                                 lambda i, doc: enumerate({"trigger": span} for span, _ in triggers[i]),
                                 list(self.types.values()))
        keep = set()
        for request, row in zip(requests, self.type_question.values(self, docs, requests)):
            span = triggers[request.doc_index][request.about][0]
            if row.any() and self.type_question.labels[int(row.argmax())] == span.label_:
                keep.add((request.doc_index, request.about))
            else:
                self.stats["unconfirmed"] += 1
        return [[item for number, item in enumerate(found) if (doc_index, number) in keep]
                for doc_index, found in enumerate(triggers)]

    def _arguments(self, docs: Sequence[Doc], triggers: List[List[ScoredSpan]]) -> List[List[Tuple[int, Span, float]]]:
        """``(trigger index, argument span labelled with its role, score)`` per Doc, for the
        triggers at ``threshold`` whose type has roles."""
        requests = []
        for doc_index, (doc, found) in enumerate(zip(docs, triggers)):
            contexts = SpanContexts(doc, self.shared.tokenizer, self.max_input_tokens)
            for number, (span, score) in enumerate(found):
                roles = self.roles.get(span.label_)
                if not roles or score < self.threshold:
                    continue
                context = contexts.of([span])
                if context is None:
                    self.stats["over_window"] += 1
                    continue
                ids = {fill_template(self.argument_template, role=text, trigger=span.text,
                                     type=self.types[span.label_]): role for role, text in roles.items()}
                text = doc.text[context[0]:context[1]].translate(LINE_BREAKS_TO_SPACES)
                requests.extend(Request(doc_index, context[0], text, EXTRACT, chunk, ids, number)
                                for chunk in _query_chunks(list(ids), self.label_chunk_size))
        found: List[List[Tuple[int, Span, float]]] = [[] for _ in docs]
        answers = self.ask(docs, requests, self.extraction.grammar) if requests else []
        for request, (span, score) in self.extraction.answered(docs, requests, answers):
            found[request.doc_index].append((request.about, span, score))
        return found

    def scorer_settings(self) -> dict:
        return {"spans_key": self.spans_key}


def _best_once(found: List[ScoredSpan]) -> List[ScoredSpan]:
    """A Doc's triggers in text order, each once (its best score where windows overlap)."""
    best: Dict[tuple, ScoredSpan] = {}
    for span, score in found:
        key = (span.start, span.end, span.label_)
        if key not in best or best[key][1] < score:
            best[key] = (span, score)
    return sorted(best.values(), key=lambda item: (item[0].start, item[0].end, item[0].label_))


def _query_chunks(queries: List[str], size: int) -> List[List[str]]:
    """Queries that may share a prompt go in chunks of ``size``; one that holds a separator alone."""
    shareable, alone = [], []
    for query in queries:
        try:
            check_label(query)
            shareable.append(query)
        except ValueError:
            alone.append([query])
    return (chunk_labels(shareable, size) if shareable else []) + alone
