"""What the demo page asks: a model (a model folder, a hub id or a saved pipeline) loaded once,
and per request a small pipeline of SeqGPT components for the labels typed on the page.

The per-request pipelines share the one loaded model: for a model folder every component names
the same model settings (one shared copy, ``models.shared``); for a saved pipeline each reads
its weights from the pipeline's own folder, which its loaded copy already holds. The last few
label sets' pipelines are kept, so asking again with the same labels builds nothing.
"""
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import spacy
from spacy.language import Language

from ..components.questions import DEFAULT_KEY as ANSWERS_KEY
from ..components.spans import SCORE_ATTR
from ..models import load_shared
from ..models.spec import model_settings
from ..text.relations import REL_ATTR

# The page's tasks: (factory, whether it needs entities found first by seqgpt_ner).
TASKS: Dict[str, Tuple[str, bool]] = {
    "ner": ("seqgpt_ner", False),
    "textcat": ("seqgpt_textcat", False),
    "typing": ("seqgpt_typing", True),
    "relations": ("seqgpt_rel", True),
    "questions": ("seqgpt_questions", False),
}
# What each component is set to besides its labels: where the page reads its answers (a saved
# pipeline's component may write elsewhere), and textcat's probabilities (bars that add up).
PAGE_SETTINGS: Dict[str, dict] = {
    "seqgpt_ner": {"spans_key": None},
    "seqgpt_textcat": {"probabilities": True},
    "seqgpt_typing": {"input_key": None, "multi_label": False},
    "seqgpt_rel": {"input_key": None},
    "seqgpt_questions": {"spans_key": ANSWERS_KEY},
}
KEPT_PIPELINES = 8


@dataclass
class DemoResult:
    """What one request found, or why it found nothing (``error``: a message for the page)."""
    task: str
    text: str = ""
    spans: List[Tuple[int, int, str, Optional[float]]] = field(default_factory=list)  # chars, label, score
    cats: Dict[str, float] = field(default_factory=dict)
    relations: List[Tuple[str, str, str, float]] = field(default_factory=list)  # head, label, tail, score
    seconds: float = 0.0
    error: Optional[str] = None


def split_labels(text: str, *, per_line: bool = False) -> List[str]:
    """Labels typed on the page: comma- or line-separated (questions: one a line, as they may hold
    commas), stripped, empty ones and repeats left out."""
    parts = text.splitlines() if per_line else text.replace("\n", ",").split(",")
    return list(dict.fromkeys(part.strip() for part in parts if part.strip()))


class DemoEngine:
    """``source``: a saved spaCy pipeline folder (its SeqGPT components' model and settings are
    used; the tasks are those it has) or a model folder or hub id (every task).
    ``max_chars``: the longest text the page takes."""

    def __init__(self, source: str, *, max_chars: int = 5000):
        self.source = source
        self.max_chars = max_chars
        self._pipelines: "OrderedDict[tuple, Language]" = OrderedDict()
        folder = Path(source)
        if (folder / "config.cfg").is_file() and (folder / "meta.json").is_file():
            self.loaded = spacy.load(folder)  # the model loads here, once; per-request pipes share it
            self.lang = self.loaded.lang
            self._components = {self.loaded.get_pipe_meta(name).factory: name for name in self.loaded.pipe_names}
            self.tasks = [task for task, (factory, needs_ents) in TASKS.items()
                          if factory in self._components and (not needs_ents or "seqgpt_ner" in self._components)]
            if not self.tasks:
                raise ValueError(f"{source} is a spaCy pipeline without SeqGPT components "
                                 f"({', '.join(self.loaded.pipe_names) or 'none'}): nothing for the demo to ask")
        else:
            self.loaded, self.lang, self._components = None, "en", {}
            self.tasks = list(TASKS)
            # loaded now and held: the components name the same settings, so they share this copy
            self.shared = load_shared(model_settings(source, "seqgpt demo").resolved())

    def _component_config(self, factory: str) -> dict:
        """A component's settings but its labels: the saved pipeline's, or just the model."""
        if self.loaded is None:
            return {"model": self.source}
        config = dict(self.loaded.config["components"][self._components[factory]])
        config.pop("factory")
        return config

    def _add(self, nlp: Language, factory: str, labels: Tuple[str, ...]) -> None:
        settings = {"questions": list(labels)} if factory == "seqgpt_questions" else {"labels": list(labels)}
        pipe = nlp.add_pipe(factory, config={**self._component_config(factory), **settings, **PAGE_SETTINGS[factory]})
        if self.loaded is not None:  # read the weights where the loaded pipeline read them: shared, not loaded again
            pipe.from_disk(Path(self.source) / self._components[factory])

    def _pipeline(self, task: str, labels: Tuple[str, ...], entity_labels: Tuple[str, ...]) -> Language:
        key = (task, labels, entity_labels)
        if key in self._pipelines:
            self._pipelines.move_to_end(key)
            return self._pipelines[key]
        factory, needs_ents = TASKS[task]
        nlp = spacy.blank(self.lang)
        if needs_ents:
            self._add(nlp, "seqgpt_ner", entity_labels)
        self._add(nlp, factory, labels)
        self._pipelines[key] = nlp
        if len(self._pipelines) > KEPT_PIPELINES:
            self._pipelines.popitem(last=False)
        return nlp

    def refusal(self, task: str, text: str, labels: List[str], entity_labels: List[str]) -> Optional[str]:
        """Why the page's input cannot be asked, in words for the page; None when it can."""
        if task not in self.tasks:
            return f"Unknown task {task!r}: this model offers {', '.join(self.tasks)}."
        if not text.strip():
            return "Type or paste a text to analyse."
        if len(text) > self.max_chars:
            return (f"The text has {len(text):,} characters; the demo takes up to {self.max_chars:,} "
                    "(seqgpt demo --max-chars). Paste a shorter part.")
        if not labels:
            what = "one question a line" if task == "questions" else "the labels, separated by commas"
            return f"Give at least one {'question' if task == 'questions' else 'label'}: {what}."
        if TASKS[task][1] and not entity_labels:
            return f"{task} works on entities: give the entity labels to find them first (e.g. person, organization)."
        return None

    def run(self, task: str, text: str, labels: List[str], entity_labels: List[str] = ()) -> DemoResult:
        """Ask ``task`` about ``text``; an input the components refuse comes back as ``error``."""
        result = DemoResult(task, text)
        result.error = self.refusal(task, text, labels, list(entity_labels))
        if result.error:
            return result
        started = time.perf_counter()
        try:
            doc = self._pipeline(task, tuple(labels), tuple(entity_labels) if TASKS[task][1] else ())(text)
        except ValueError as err:  # a label or question the answer grammar or prompt refuses
            result.error = str(err)
            return result
        result.seconds = time.perf_counter() - started
        if task == "textcat":
            result.cats = dict(sorted(doc.cats.items(), key=lambda item: -item[1]))
        elif task == "questions":
            group = doc.spans.get(ANSWERS_KEY, [])
            scores = group.attrs.get("scores", [None] * len(group)) if len(group) else []
            result.spans = [(span.start_char, span.end_char, span.label_, score) for span, score in zip(group, scores)]
        else:
            result.spans = [(ent.start_char, ent.end_char, ent.label_, ent._.get(SCORE_ATTR)) for ent in doc.ents]
        if task == "relations":
            by_start = {(ent.start, ent.end): ent.text for ent in doc.ents}
            result.relations = [(by_start[pair[:2]], label, by_start[pair[2:]], float(score))
                                for pair, found in doc._.get(REL_ATTR).items() for label, score in found.items()]
        return result
