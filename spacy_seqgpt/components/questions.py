"""``seqgpt_questions``: extractive question answering (MRC), as SeqGPT reduces it to extraction.

A question is the extraction query: ``输入: {text}\\n抽取: {question}\\n输出: {question}: answer``.
Questions are asked one per prompt, so they may hold commas and colons: the answer grammar
forces the line to begin with the question, and the reader finds the answer after it.
"""
from typing import Dict, List, Sequence, Union

from spacy.language import Language
from spacy.tokens import Doc

from ..decoding import DEFAULT_DRAFT_TOKENS, Request, window_requests
from ..models import HFModel
from ..prompts import EXTRACT, check_query, prompt_labels
from .base import SETTINGS
from .ner import QueryRequest, SeqGPTNER

QUESTIONS_ATTR = "questions"  # doc._.questions: a Doc's own questions, {id: question} or a list
if not Doc.has_extension(QUESTIONS_ATTR):
    Doc.set_extension(QUESTIONS_ATTR, default=None)
DEFAULT_KEY = "answers"


@Language.factory(
    "seqgpt_questions",
    assigns=["doc.spans"],
    default_config={"questions": {}, **SETTINGS, "alignment_mode": "expand", "case_sensitive": False,
                    "spans_key": DEFAULT_KEY, "threshold": 0.0},
    default_score_weights={f"spans_{DEFAULT_KEY}_f": 1.0, f"spans_{DEFAULT_KEY}_p": 0.0,
                           f"spans_{DEFAULT_KEY}_r": 0.0},
)
def make_seqgpt_questions(nlp: Language, name: str, questions: Union[List[str], Dict[str, str]],
                          model: Union[str, HFModel], batch_size: int, max_new_tokens: int, num_beams: int,
                          max_input_tokens: int, constrained: bool, alignment_mode: str, case_sensitive: bool,
                          spans_key: str, threshold: float,
                          jump_forward: bool = True, speculate: bool = True,
                          draft_tokens: int = DEFAULT_DRAFT_TOKENS) -> "SeqGPTQuestions":
    return SeqGPTQuestions(nlp.vocab, name, questions=questions, model=model, batch_size=batch_size,
                           max_new_tokens=max_new_tokens, num_beams=num_beams, max_input_tokens=max_input_tokens,
                           constrained=constrained, alignment_mode=alignment_mode, case_sensitive=case_sensitive,
                           spans_key=spans_key, threshold=threshold, jump_forward=jump_forward,
                           speculate=speculate, draft_tokens=draft_tokens)


class SeqGPTQuestions(SeqGPTNER):
    """Answers ``questions`` (asked of every Doc) and each Doc's ``doc._.questions`` with spans of
    the text: ``doc.spans[spans_key]`` holds every answer span labelled with its question's id
    (a list of questions: the question itself), scores in ``attrs["scores"]``. A dict gives ids:
    ``{"q1": "Who founded Apple, and when?"}``. A question may hold anything but a line break.
    Everything else is ``seqgpt_ner``'s: windows, thresholds, alignment, ``stats``.
    """

    label_check = staticmethod(check_query)
    labels_required = False

    def __init__(self, vocab, name: str, *, questions: Union[List[str], Dict[str, str]], spans_key: str, **settings):
        if not isinstance(spans_key, str) or not spans_key:
            raise ValueError(f"{name}: spans_key must name the span group the answers go into, got {spans_key!r}")
        super().__init__(vocab, name, labels=questions, label_chunk_size=1, spans_key=spans_key, **settings)

    def doc_questions(self, doc: Doc) -> Dict[str, str]:
        """``{id: question}`` asked of ``doc``: the component's, then the Doc's own."""
        own = doc._.get(QUESTIONS_ATTR)
        if not own:
            return self.label_map
        asked = {**self.label_map, **prompt_labels(own, component=f"{self.name} (doc._.questions)", check=check_query)}
        return prompt_labels(asked, component=f"{self.name} (questions and doc._.questions)", check=check_query)

    def make_requests(self, docs: Sequence[Doc]) -> List[Request]:
        asked = [self.doc_questions(doc) for doc in docs]
        requests = window_requests(docs, self.shared.tokenizer,
                                   lambda i: (EXTRACT, [[question] for question in asked[i].values()]),
                                   self.max_input_tokens)
        ids = [{text: key for key, text in questions.items()} for questions in asked]
        return [QueryRequest(r.doc_index, r.start_char, r.text, r.task, r.labels, ids[r.doc_index]) for r in requests]
