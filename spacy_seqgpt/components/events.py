"""``seqgpt_events``: event extraction as SeqGPT reduces it to its atomic tasks.

1. Triggers by extraction: each event type is queried as ``trigger_template`` ("Process_start
   event"), and the answer's spans are the triggers.
2. Optionally (``confirm``), each trigger's type is confirmed by classification: ``type_template``
   asks about the trigger in its context with the event types as labels; a trigger whose answer
   names another type is dropped (``stats["unconfirmed"]``).
3. Arguments by extraction: for each trigger, its type's ``roles`` are queried as
   ``argument_template`` (naming the trigger) over the trigger's context.

SeqGPT's exact wording of these queries is not published; the templates are settings.
Triggers go to ``doc.spans[spans_key]`` (label: event type, ``attrs["scores"]``), arguments to
``doc.spans[spans_key + "_arguments"]`` (label: role; ``attrs["triggers"]``: the index of each
argument's trigger, ``attrs["scores"]``). ``doc._.events`` reads them back as a list of
``{"trigger": Span, "type": str, "score": float, "arguments": {role: [Span]}}`` (for another
``spans_key``, ``read_events(doc, key)`` does).
"""
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Sequence, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc, Span, SpanGroup

from ..decoding import DEFAULT_DRAFT_TOKENS, Request, make_queries
from ..decoding.queries import LINE_BREAKS_TO_SPACES
from ..kernels.constraints import ClassificationGrammar
from ..models import HFModel
from ..prompts import CLASSIFY, EXTRACT, DEFAULT_LABEL_CHUNK_SIZE, LINE_BREAKS, check_label, chunk_labels, \
    fill_question, parse_answer, prompt_labels
from .base import SETTINGS
from .ner import QueryRequest, SeqGPTNER
from .span_questions import SpanContexts
from .spans import ScoredSpan, score_spans

TRIGGER_TEMPLATE = "{type} event"
TYPE_TEMPLATE = "what is the event type of {trigger} in {text}"
ARGUMENT_TEMPLATE = "{role} of {trigger}"
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
    default_config={"event_types": [], "roles": {}, **SETTINGS, "confirm": False,
                    "label_chunk_size": DEFAULT_LABEL_CHUNK_SIZE, "trigger_template": TRIGGER_TEMPLATE,
                    "type_template": TYPE_TEMPLATE, "argument_template": ARGUMENT_TEMPLATE,
                    "spans_key": DEFAULT_KEY, "threshold": 0.0},
    default_score_weights={f"spans_{DEFAULT_KEY}_f": 1.0, f"spans_{DEFAULT_KEY}_p": 0.0, f"spans_{DEFAULT_KEY}_r": 0.0,
                           f"spans_{DEFAULT_KEY}_arguments_f": 1.0, f"spans_{DEFAULT_KEY}_arguments_p": 0.0,
                           f"spans_{DEFAULT_KEY}_arguments_r": 0.0},
)
def make_seqgpt_events(nlp: Language, name: str, event_types: Union[List[str], Dict[str, str]],
                       roles: Dict[str, Union[List[str], Dict[str, str]]], model: Union[str, HFModel],
                       batch_size: int, max_new_tokens: int, num_beams: int, max_input_tokens: int, constrained: bool,
                       confirm: bool, label_chunk_size: int, trigger_template: str, type_template: str,
                       argument_template: str, spans_key: str, threshold: float,
                       jump_forward: bool = True, speculate: bool = True,
                       draft_tokens: int = DEFAULT_DRAFT_TOKENS) -> "SeqGPTEvents":
    return SeqGPTEvents(nlp.vocab, name, event_types=event_types, roles=roles, model=model, batch_size=batch_size,
                        max_new_tokens=max_new_tokens, num_beams=num_beams, max_input_tokens=max_input_tokens,
                        constrained=constrained, confirm=confirm, label_chunk_size=label_chunk_size,
                        trigger_template=trigger_template, type_template=type_template,
                        argument_template=argument_template, spans_key=spans_key, threshold=threshold,
                        jump_forward=jump_forward, speculate=speculate, draft_tokens=draft_tokens)


@dataclass
class ArgumentRequest(QueryRequest):
    """Role queries about one trigger (its index among the Doc's triggers)."""

    trigger: int = -1


def _check_template(name: str, setting: str, template: str, fields: Sequence[str]) -> str:
    if (not isinstance(template, str) or any(f"{{{field}}}" not in template for field in fields)
            or any(char in LINE_BREAKS for char in template)):
        raise ValueError(f"{name}: {setting} must be one line holding {', '.join(f'{{{f}}}' for f in fields)}, "
                         f"got {template!r}")
    return template


class SeqGPTEvents(SeqGPTNER):
    """Event triggers, their types and their arguments (see the module's docs for the steps).

    ``event_types``: a list, or ``{type: prompt text}``; ``roles``: ``{type: [role, ...]}`` (or
    ``{type: {role: prompt text}}``), the argument roles asked for each trigger of the type.
    Everything about windows, alignment, thresholds (triggers and arguments alike) and
    ``stats`` is ``seqgpt_ner``'s; a trigger no window holds is counted in ``stats["over_window"]``.
    """

    def __init__(self, vocab, name: str, *, event_types, roles: Mapping, confirm: bool, trigger_template: str,
                 type_template: str, argument_template: str, spans_key: str, **settings):
        types = prompt_labels(event_types, component=name)
        _check_template(name, "trigger_template", trigger_template, ["type"])
        queries = {label: fill_question(trigger_template, type=text) for label, text in types.items()}
        if not isinstance(spans_key, str) or not spans_key:
            raise ValueError(f"{name}: spans_key must name the span group of the triggers, got {spans_key!r}")
        super().__init__(vocab, name, labels=queries, spans_key=spans_key, alignment_mode="expand",
                         case_sensitive=False, **settings)
        self.types = types
        self.label_chunk_size = settings["label_chunk_size"]
        if not isinstance(roles, Mapping):
            raise ValueError(f"{name}: roles must map event types to their roles, got {roles!r}")
        unknown = sorted(set(roles) - set(types))
        if unknown:
            raise ValueError(f"{name}: roles are given for {unknown}, which are not event_types {list(types)}")
        self.roles = {event_type: prompt_labels(spec, component=f"{name} (roles of {event_type})")
                      for event_type, spec in roles.items()}
        self.confirm = bool(confirm)
        self.type_template = _check_template(name, "type_template", type_template, ["trigger", "text"])
        self.argument_template = _check_template(name, "argument_template", argument_template, ["role", "trigger"])

    def annotate(self, docs: Sequence[Doc]) -> None:
        triggers = self._extracted(docs, self.make_requests(docs))
        if self.confirm:
            triggers = self._confirmed(docs, triggers)
        arguments = self._arguments(docs, triggers)
        for doc, found, args in zip(docs, triggers, arguments):
            group = SpanGroup(doc, name=self.spans_key, spans=[span for span, _ in found])
            group.attrs["scores"] = [score for _, score in found]
            doc.spans[self.spans_key] = group
            group = SpanGroup(doc, name=f"{self.spans_key}_arguments", spans=[span for _, span, _ in args])
            group.attrs["triggers"] = [trigger for trigger, _, _ in args]
            group.attrs["scores"] = [score for _, _, score in args]
            doc.spans[f"{self.spans_key}_arguments"] = group

    def _answered(self, docs: Sequence[Doc], requests: Sequence[Request]) -> Iterator[Tuple[Request, Span, float]]:
        """Each span answering ``requests`` with its request, at ``threshold``."""
        grammar = (lambda request: self.grammar(docs[request.doc_index], request)) if self.constrained else None
        answers = self.decoder().decode(make_queries(requests, grammar))
        for request, answer in zip(requests, answers):
            for span, score in self._spans(docs[request.doc_index], request, answer):
                if score < self.threshold:
                    self.stats["below_threshold"] += 1
                else:
                    yield request, span, score

    def _extracted(self, docs: Sequence[Doc], requests: Sequence[Request]) -> List[List[ScoredSpan]]:
        """The triggers per Doc, in text order, each once (its best score where windows overlap)."""
        found: List[Dict[tuple, ScoredSpan]] = [{} for _ in docs]
        for request, span, score in self._answered(docs, requests):
            key = (span.start, span.end, span.label_)
            if key not in found[request.doc_index] or found[request.doc_index][key][1] < score:
                found[request.doc_index][key] = (span, score)
        return [sorted(spans.values(), key=lambda item: (item[0].start, item[0].end, item[0].label_)) for spans in found]

    def _confirmed(self, docs: Sequence[Doc], triggers: List[List[ScoredSpan]]) -> List[List[ScoredSpan]]:
        """The triggers whose type the classification question names too."""
        labels = list(self.types.values())
        type_of_text = {text: label for label, text in self.types.items()}
        requests, asked = [], []
        for doc_index, (doc, found) in enumerate(zip(docs, triggers)):
            contexts = SpanContexts(doc, self.shared.tokenizer, self.max_input_tokens)
            for number, (span, _) in enumerate(found):
                context = contexts.of([span])
                if context is None:
                    self.stats["over_window"] += 1
                    continue
                text = fill_question(self.type_template, trigger=span.text, text=doc.text[context[0]:context[1]])
                requests.append(Request(doc_index, context[0], text.translate(LINE_BREAKS_TO_SPACES), CLASSIFY, labels))
                asked.append((doc_index, number))
        grammar = ClassificationGrammar(labels, exclusive=True)
        answers = self.decoder().decode(make_queries(requests, (lambda _: grammar) if self.constrained else None))
        keep = set()
        for (doc_index, number), answer in zip(asked, answers):
            named = parse_answer(CLASSIFY, answer.text, labels)[:1]
            if named and type_of_text[named[0]] == triggers[doc_index][number][0].label_:
                keep.add((doc_index, number))
            else:
                self.stats["unconfirmed"] += 1
        return [[item for number, item in enumerate(found) if (doc_index, number) in keep]
                for doc_index, found in enumerate(triggers)]

    def _arguments(self, docs: Sequence[Doc], triggers: List[List[ScoredSpan]]) -> List[List[tuple]]:
        """``(trigger index, argument span labelled with its role, score)`` per Doc."""
        requests = []
        for doc_index, (doc, found) in enumerate(zip(docs, triggers)):
            contexts = SpanContexts(doc, self.shared.tokenizer, self.max_input_tokens)
            for number, (span, _) in enumerate(found):
                roles = self.roles.get(span.label_)
                context = contexts.of([span]) if roles else None
                if roles and context is None:
                    self.stats["over_window"] += 1
                if context is None:
                    continue
                ids = {fill_question(self.argument_template, role=text, trigger=span.text,
                                     type=self.types[span.label_]): role for role, text in roles.items()}
                text = doc.text[context[0]:context[1]].translate(LINE_BREAKS_TO_SPACES)
                requests.extend(ArgumentRequest(doc_index, context[0], text, EXTRACT, chunk, ids, number)
                                for chunk in _query_chunks(list(ids), self.label_chunk_size))
        found: List[List[tuple]] = [[] for _ in docs]
        for request, span, score in self._answered(docs, requests) if requests else ():
            found[request.doc_index].append((request.trigger, span, score))
        return found

    def score(self, examples, **kwargs) -> Dict:
        """Span P/R/F of the triggers (with their types) and of the arguments (with their roles)."""
        return {**score_spans(examples, self.spans_key, "SeqGPTEvents", **kwargs),
                **score_spans(examples, f"{self.spans_key}_arguments", "SeqGPTEvents", **kwargs)}


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
