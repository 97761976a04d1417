"""The whole path, prompt -> generate -> parse -> align, with a tiny model taught the answers."""
import pytest
import spacy
from spacy.tokens import Span
from spacy.training import Example
from transformers import AutoTokenizer

from conftest import CAT_LABELS, EXAMPLES, NER_LABELS, expected_ents
from spacy_seqgpt.decoding import Answer, Request
from spacy_seqgpt.prompts import CLASSIFY, EXTRACT

ENGLISH = [example for example in EXAMPLES if example[0] == "en"]


def make_nlp(model, lang="en", ner=None, textcat=None):
    nlp = spacy.blank(lang)
    nlp.add_pipe("seqgpt_ner", config={"labels": NER_LABELS, "model": model, **(ner or {})})
    nlp.add_pipe("seqgpt_textcat", config={"labels": CAT_LABELS, "model": model, **(textcat or {})})
    return nlp


def annotations(doc):
    spans = {key: [(s.start_char, s.end_char, s.label_) for s in group] for key, group in doc.spans.items()}
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents], dict(doc.cats), spans


@pytest.fixture(scope="module")
def nlp(seqgpt_tiny):
    return make_nlp(seqgpt_tiny)


@pytest.mark.parametrize("lang,text,entities,category", EXAMPLES, ids=[e[1][:20] for e in EXAMPLES])
def test_entities_and_categories_are_exactly_the_taught_ones(seqgpt_tiny, nlp, lang, text, entities, category):
    pipeline = nlp if lang == "en" else make_nlp(seqgpt_tiny, lang)
    doc = pipeline(text)
    assert sorted((e.start_char, e.end_char, e.label_) for e in doc.ents) == expected_ents(text, entities)
    assert doc.cats == {label: float(label == category) for label in CAT_LABELS}


def test_label_dict_writes_the_given_labels(seqgpt_tiny):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"model": seqgpt_tiny,
                                       "labels": {"PER": "person", "ORG": "organization", "LOC": "location"}})
    doc = nlp("Apple opened a new office in Paris.")
    assert [(e.text, e.label_) for e in doc.ents] == [("Apple", "ORG"), ("Paris", "LOC")]


def test_pipe_in_batches_of_8_equals_one_doc_at_a_time(nlp):
    texts = [text for _, text, _, _ in ENGLISH] * 3 + ["", "   ", "Berlin."]
    one_by_one = [annotations(nlp(text)) for text in texts]
    batched = [annotations(doc) for doc in nlp.pipe(texts, batch_size=8)]
    assert batched == one_by_one
    assert sum(len(ents) for ents, _, _ in batched) == 3 * sum(len(expected_ents(t, e)) for _, t, e, _ in ENGLISH)


def test_generation_batches_of_one_and_many_agree(seqgpt_tiny):
    texts = [text for _, text, _, _ in ENGLISH]
    small, large = (make_nlp(seqgpt_tiny, ner={"decoding": {"batch_size": size}},
                             textcat={"decoding": {"batch_size": size}}) for size in (1, 16))
    assert [annotations(d) for d in small.pipe(texts)] == [annotations(d) for d in large.pipe(texts)]


def test_saved_pipeline_loads_without_the_original_model_and_annotates_the_same(nlp, tmp_path):
    texts = [text for _, text, _, _ in ENGLISH]
    before = [annotations(doc) for doc in nlp.pipe(texts)]
    nlp.to_disk(tmp_path / "saved")
    nlp.to_disk(tmp_path / "saved")  # saving again over itself keeps one copy
    assert (tmp_path / "saved" / "seqgpt_ner" / "model" / "model.safetensors").exists()
    assert (tmp_path / "saved" / "seqgpt_ner" / "model" / "tokenizer.json").exists()
    assert not (tmp_path / "saved" / "seqgpt_textcat" / "model").exists()  # the shared model is written once
    (tmp_path / "saved").rename(tmp_path / "pipeline")  # the pointer is relative: the folder can move
    loaded = spacy.load(tmp_path / "pipeline", config={"components": {
        "seqgpt_ner": {"model": "no-such-org/no-such-model"},
        "seqgpt_textcat": {"model": "no-such-org/no-such-model"}}})  # proves nothing is fetched
    assert [annotations(doc) for doc in loaded.pipe(texts)] == before
    ner, textcat = loaded.get_pipe("seqgpt_ner"), loaded.get_pipe("seqgpt_textcat")
    assert ner.shared is textcat.shared  # one copy of the weights again
    assert ner.shared is not nlp.get_pipe("seqgpt_ner").shared  # really read from disk


def test_bytes_round_trip_keeps_the_weights(nlp, seqgpt_tiny):
    texts = [text for _, text, _, _ in ENGLISH]
    fresh = make_nlp("no-such-org/no-such-model")
    fresh.from_bytes(nlp.to_bytes())
    assert [annotations(doc) for doc in fresh.pipe(texts)] == [annotations(doc) for doc in nlp.pipe(texts)]


def test_spans_key_keeps_overlaps_and_leaves_ents_alone(seqgpt_tiny):
    nlp = make_nlp(seqgpt_tiny, ner={"spans_key": "seqgpt"})
    doc = nlp.make_doc("Tim Cook met Olaf Scholz in Berlin.")
    doc.ents = [Span(doc, 0, 1, label="GIVEN")]
    doc = nlp(doc)
    assert [(e.text, e.label_) for e in doc.ents] == [("Tim", "GIVEN")]
    assert [(s.text, s.label_) for s in doc.spans["seqgpt"]] == [
        ("Tim Cook", "person"), ("Olaf Scholz", "person"), ("Berlin", "location")]


def test_entities_already_on_the_doc_are_kept(nlp):
    doc = nlp.make_doc("Tim Cook met Olaf Scholz in Berlin.")
    doc.ents = [Span(doc, 1, 2, label="GIVEN")]  # "Cook"
    doc = nlp(doc)
    assert [(e.text, e.label_) for e in doc.ents] == [("Cook", "GIVEN"), ("Olaf Scholz", "person"),
                                                    ("Berlin", "location")]


def test_a_5000_token_document_is_windowed_and_offsets_map_back(seqgpt_tiny):
    sentence = "Tim Cook met Olaf Scholz in Berlin."
    n_subwords = len(AutoTokenizer.from_pretrained(seqgpt_tiny)(sentence, add_special_tokens=False)["input_ids"])
    budget = n_subwords + 2  # one sentence fits in a window, two do not
    nlp = make_nlp(seqgpt_tiny, ner={"decoding": {"max_input_tokens": budget, "batch_size": 64}},
                   textcat={"decoding": {"max_input_tokens": budget, "batch_size": 64}})
    nlp.add_pipe("sentencizer", first=True)
    text = " ".join([sentence] * 640)
    doc = nlp(text)
    assert len(doc) >= 5000
    assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == expected_ents(
        text, {"person": ["Tim Cook", "Olaf Scholz"], "location": ["Berlin"]})
    assert doc.cats["politics"] == 1.0


def test_a_5000_token_document_with_default_windows_gives_valid_spans(nlp):
    text = " ".join([text for _, text, _, _ in ENGLISH] * 130)
    doc = nlp(text)
    assert len(doc) > 5000
    assert all(ent.label_ in NER_LABELS and ent.text.strip() for ent in doc.ents)
    assert set(doc.cats) == set(CAT_LABELS) and all(0.0 <= v <= 1.0 for v in doc.cats.values())


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t", "🎉🎉🎉", "😀 👍🏽 🇩🇪", "中文文本，没有实体。", "é̃ͅ a\u0301"])
def test_odd_texts_give_valid_results(nlp, text):
    doc = nlp(text)
    assert all(ent.label_ in NER_LABELS for ent in doc.ents)
    assert set(doc.cats) == set(CAT_LABELS)
    if not text.strip():
        assert doc.ents == () and set(doc.cats.values()) == {0.0}


def fabricated(nlp, text, answer, **ner_settings):
    """Annotate ``text`` as if the model had answered ``answer`` (no model run)."""
    ner = spacy.blank("en").add_pipe("seqgpt_ner", config={"labels": NER_LABELS, **ner_settings})
    doc = nlp.make_doc(text)
    ner.set_annotations(
        [doc], ner.extraction.per_doc([doc], [Request(0, 0, text, EXTRACT, NER_LABELS)], [Answer(answer)])
    )
    return doc, ner.stats


def test_answers_not_in_the_text_are_dropped_and_counted(nlp):
    doc, stats = fabricated(nlp, "Tim Cook met Olaf Scholz.", "person: Tim Cook, Angela Merkel\nlocation: Mars")
    assert [e.text for e in doc.ents] == ["Tim Cook"]
    assert stats == {"answers": 3, "dropped": 2}


def test_case_sensitivity_and_alignment_modes(nlp):
    doc, stats = fabricated(nlp, "TIM COOK met Olaf Scholz.", "person: Tim Cook", case_sensitive=True)
    assert doc.ents == () and stats["dropped"] == 1
    doc, _ = fabricated(nlp, "TIM COOK met Olaf Scholz.", "person: Tim Cook", case_sensitive=False)
    assert [e.text for e in doc.ents] == ["TIM COOK"]
    # "U.S" ends inside the token "U.S.": only "expand" can map it to tokens
    for mode, expected in (("strict", []), ("contract", []), ("expand", ["U.S."])):
        doc, stats = fabricated(nlp, "The U.S. firm", "location: U.S", alignment_mode=mode)
        assert [e.text for e in doc.ents] == expected, mode
        assert stats["unaligned"] == (0 if expected else 1) and stats["dropped"] == 0


def test_every_answer_that_occurs_in_the_text_becomes_a_span(nlp):
    text = "Visitors of the Große\nStraße, NEW  YORK and 北京 met São Paulo's mayor."
    answer = "location: große straße, New York, 北京, Sao Paulo, São Paulo"
    doc, stats = fabricated(nlp, text, answer, spans_key="sc")
    assert [span.text for span in doc.spans["sc"]] == ["Große\nStraße", "NEW  YORK", "北京", "São Paulo"]
    assert stats == {"answers": 5, "dropped": 1}  # only "Sao Paulo" is not in the text


def test_overlapping_answers_keep_the_longest_in_ents(nlp):
    doc, _ = fabricated(nlp, "He flew to New York City.", "location: New York, New York City\norganization: York")
    assert [(e.text, e.label_) for e in doc.ents] == [("New York City", "location")]


def test_scores_come_from_spacys_scorer(nlp):
    examples = []
    for _, text, entities, category in ENGLISH:
        reference = nlp.make_doc(text)
        reference.ents = [reference.char_span(s, e, label=label) for s, e, label in expected_ents(text, entities)]
        reference.cats = {label: float(label == category) for label in CAT_LABELS}
        examples.append(Example(nlp.make_doc(text), reference))
    scores = nlp.evaluate(examples)
    assert scores["ents_f"] == 1.0 and scores["ents_p"] == 1.0
    assert scores["cats_macro_f"] == 1.0
    wrong = [Example(nlp.make_doc(ex.reference.text), ex.reference) for ex in examples]
    for ex in wrong:
        ex.reference.cats = {label: float(label == "sports") for label in CAT_LABELS}
    assert nlp.evaluate(wrong)["cats_macro_f"] < 1.0


def test_multi_label_textcat_writes_every_chosen_label(seqgpt_tiny):
    nlp = make_nlp(seqgpt_tiny, textcat={"multi_label": True})
    textcat = nlp.get_pipe("seqgpt_textcat")
    doc = nlp.make_doc("x")
    chosen = textcat.classification.chosen(
        [Request(0, 0, "x", CLASSIFY, CAT_LABELS)], [Answer("sports，business\nweather")]
    )
    textcat.set_annotations([doc], chosen)
    assert doc.cats == {"sports": 1.0, "politics": 0.0, "business": 1.0}


def test_line_breaks_never_split_the_prompt_and_offsets_hold(tiny_bloom):
    ner = spacy.blank("en").add_pipe("seqgpt_ner", config={"labels": NER_LABELS, "model": tiny_bloom})
    text = "Tim Cook\nmet Olaf\r\nScholz\u2028in Berlin."
    doc = spacy.blank("en").make_doc(text)
    (request,) = ner.make_requests([doc])
    assert "\n" not in request.text and "\r" not in request.text and "\u2028" not in request.text
    assert len(request.text) == len(text) and request.start_char == 0
    ner.set_annotations(
        [doc], ner.extraction.per_doc([doc], [request], [Answer("person: Olaf Scholz\nlocation: Berlin")])
    )
    assert [(e.text, e.label_) for e in doc.ents] == [("Olaf\r\nScholz", "person"), ("Berlin", "location")]
