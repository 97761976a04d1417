"""The one object that asks: requests about spans in their context, built through one module,
each Doc cut into subwords once however many questions it gets, what is left out counted."""
from types import SimpleNamespace

import spacy
from spacy.tokens import Span
from transformers import AutoTokenizer

from spacy_seqgpt.decoding import Asker, Decoding
from spacy_seqgpt.prompts import CLASSIFY, EXTRACT


class CountingTokenizer:
    """A fast tokenizer that counts the texts it is asked to cut."""

    def __init__(self, tokenizer):
        self.tokenizer, self.is_fast, self.calls = tokenizer, True, []

    def __call__(self, text, **kwargs):
        self.calls.append(text)
        return self.tokenizer(text, **kwargs)


def test_questions_about_spans_and_in_their_context_cut_a_doc_once_and_count_what_is_left_out(tiny_bloom):
    tokenizer = CountingTokenizer(AutoTokenizer.from_pretrained(tiny_bloom))
    asker = Asker(SimpleNamespace(tokenizer=tokenizer), Decoding(max_input_tokens=8))
    nlp = spacy.blank("en")
    doc = nlp("Rebels attacked the convoy near Kabul and then they travelled to a city very far away.")
    trigger, long_span = Span(doc, 1, 2, "Attack"), Span(doc, 0, len(doc), "Run")
    typed = asker.about_spans([doc], "type of {trigger} in {text}", lambda i, d: [(0, {"trigger": trigger}),
                                                                                  (1, {"trigger": long_span})],
                              ["Attack", "Transport"])
    roles = asker.in_context([doc], lambda i, d: [(0, trigger, {"attacker of attacked": "attacker",
                                                                 "target of attacked": "target"})], chunk_size=1)
    assert [(r.task, r.subject, r.label_texts) for r in typed] == [(CLASSIFY, 0, ["Attack", "Transport"])]
    assert [(r.task, r.subject, r.label_texts, r.label_of["target of attacked"]) for r in roles] == [
        (EXTRACT, 0, ["attacker of attacked"], "target"), (EXTRACT, 0, ["target of attacked"], "target")]
    assert doc.text[roles[0].start_char:].startswith(roles[0].text) and "attacked" in roles[0].text
    assert asker.stats["over_window"] == 1  # the whole-Doc span is over 8 subwords on its own
    assert tokenizer.calls.count(doc.text) == 1 and asker.contexts(doc) is asker.contexts(doc)
