"""``seqgpt_questions``: extractive question answering (MRC), as SeqGPT reduces it to extraction.

A question is the extraction query: ``输入: {text}\\n抽取: {question}\\n输出: {question}: answer``.
Questions are asked one per prompt, so they may hold commas and colons: the answer grammar
forces the line to begin with the question, and the reader finds the answer after it.

The setting is ``questions``, not ``labels``: a question is free text (commas, colons, question
marks), not a label that shares a prompt with others, and Docs may bring their own.
"""
from typing import Callable, Dict, List, Sequence, Union

from spacy.language import Language
from spacy.tokens import Doc

from ..decoding import Decoding
from ..models import HFModel
from ..prompts import EXTRACT, check_query, prompt_labels
from ..validation import check_key
from .extraction import SpanExtraction
from .pipe import SETTINGS, SeqGPTPipe
from .scorers import scorer_ref
from .spans import ScoredSpan, write_spans

QUESTIONS_ATTR = "questions"  # doc._.questions: a Doc's own questions, {id: question} or a list
if not Doc.has_extension(QUESTIONS_ATTR):
    Doc.set_extension(QUESTIONS_ATTR, default=None)
DEFAULT_KEY = "answers"


@Language.factory(
    "seqgpt_questions",
    assigns=["doc.spans"],
    default_config={"questions": {}, **SETTINGS, "alignment_mode": "expand", "case_sensitive": False,
                    "spans_key": DEFAULT_KEY, "overwrite": False, "threshold": 0.0, "scorer": scorer_ref("spans")},
    default_score_weights={f"spans_{DEFAULT_KEY}_f": 1.0, f"spans_{DEFAULT_KEY}_p": 0.0,
                           f"spans_{DEFAULT_KEY}_r": 0.0},
)
def make_seqgpt_questions(nlp: Language, name: str, questions: Union[List[str], Dict[str, str]],
                          model: Union[str, HFModel], decoding: Decoding, alignment_mode: str, case_sensitive: bool,
                          spans_key: str, overwrite: bool, threshold: float, scorer: Callable) -> "SeqGPTQuestions":
    return SeqGPTQuestions(nlp.vocab, name, questions=questions, model=model, decoding=decoding,
                           alignment_mode=alignment_mode, case_sensitive=case_sensitive, spans_key=spans_key,
                           overwrite=overwrite, threshold=threshold, scorer=scorer)


class SeqGPTQuestions(SeqGPTPipe):
    """Answers ``questions`` (asked of every Doc) and each Doc's ``doc._.questions`` with spans of
    the text: ``doc.spans[spans_key]`` holds every answer span labelled with its question's id
    (a list of questions: the question itself), scores in ``attrs["scores"]``. A dict gives ids:
    ``{"q1": "Who founded Apple, and when?"}``. A question may hold anything but a line break.
    Windows, alignment, ``overwrite``, ``threshold`` and ``stats`` are ``seqgpt_ner``'s.
    """

    def __init__(self, vocab, name: str, *, questions: Union[List[str], Dict[str, str]], alignment_mode: str,
                 case_sensitive: bool, spans_key: str, overwrite: bool = False, threshold: float, **settings):
        super().__init__(vocab, name, threshold=threshold, **settings)
        self.overwrite = bool(overwrite)
        self.spans_key = check_key(spans_key, name, "spans_key", optional=False)
        self.label_map = prompt_labels(questions, component=name, check=check_query) if questions else {}
        self.extraction = SpanExtraction(name, {}, alignment_mode=alignment_mode, case_sensitive=case_sensitive,
                                         decoding=self.decoding, threshold=self.threshold, stats=self.stats)

    @property
    def labels(self) -> tuple:
        return tuple(self.label_map)

    def doc_questions(self, doc: Doc) -> Dict[str, str]:
        """``{id: question}`` asked of ``doc``: the component's, then the Doc's own."""
        own = doc._.get(QUESTIONS_ATTR)
        if not own:
            return self.label_map
        asked = {**self.label_map, **prompt_labels(own, component=f"{self.name} (doc._.questions)", check=check_query)}
        return prompt_labels(asked, component=f"{self.name} (questions and doc._.questions)", check=check_query)

    def predict(self, docs: Sequence[Doc]) -> List[List[ScoredSpan]]:
        asked = [self.doc_questions(doc) for doc in docs]
        asker = self.asker()
        requests = asker.windows(docs, lambda i: (EXTRACT, [[question] for question in asked[i].values()]))
        ids = [{text: key for key, text in questions.items()} for questions in asked]
        for request in requests:
            request.label_of = ids[request.doc_index]
        return self.extraction.ask(asker, docs, requests)

    def set_annotations(self, docs: Sequence[Doc], predictions: Sequence[List[ScoredSpan]]) -> None:
        for doc, scored in zip(docs, predictions):
            write_spans(doc, self.spans_key, self.kept(scored), overwrite=self.overwrite)

    def scorer_settings(self) -> dict:
        return {"spans_key": self.spans_key}
