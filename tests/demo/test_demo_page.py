"""`seqgpt demo` without a browser: the engine on a model folder and on a saved pipeline (one
loaded model, labels per request), its refusals in words for the page, the page's escaping, and
the server over HTTP."""
import urllib.error
import urllib.parse
import urllib.request

import pytest
import spacy
from hypothesis import given, strategies as st

from conftest import CAT_LABELS, NER_LABELS, ROOT, load_script
from spacy_seqgpt.demo.engine import DemoEngine, DemoResult, split_labels
from spacy_seqgpt.demo.page import render_page

TEXT = "Tim Cook met Olaf Scholz in Berlin."


@pytest.fixture(scope="module")
def engine(seqgpt_tiny):
    return DemoEngine(seqgpt_tiny, max_chars=200)


def test_a_model_folder_answers_every_task_with_labels_chosen_per_request(engine):
    assert engine.tasks == ["ner", "textcat", "typing", "relations", "questions"]
    ner = engine.run("ner", TEXT, NER_LABELS)
    assert ner.error is None and ner.seconds > 0
    assert [(TEXT[start:end], label) for start, end, label, _ in ner.spans] == [
        ("Tim Cook", "person"), ("Olaf Scholz", "person"), ("Berlin", "location")]
    assert all(0 < score <= 1 for *_, score in ner.spans)
    cats = engine.run("textcat", TEXT, CAT_LABELS).cats
    assert list(cats)[0] == "politics" and abs(sum(cats.values()) - 1) < 1e-6  # highest first, probabilities
    persons = engine.run("ner", TEXT, ["person"])  # other labels, the same loaded model
    assert {label for *_, label, _ in persons.spans} == {"person"}
    assert all(pipe.shared is engine.shared for nlp in engine._pipelines.values() for _, pipe in nlp.pipeline)
    typed = engine.run("typing", TEXT, ["person", "location"], NER_LABELS)
    assert [TEXT[start:end] for start, end, *_ in typed.spans] == ["Tim Cook", "Olaf Scholz", "Berlin"]
    related = engine.run("relations", TEXT, ["based in"], NER_LABELS)
    assert related.error is None and all(head != tail for head, _, tail, _ in related.relations)
    assert {(head, tail) for head, _, tail, _ in related.relations} <= {
        (a, b) for a in ("Tim Cook", "Olaf Scholz", "Berlin") for b in ("Tim Cook", "Olaf Scholz", "Berlin")}


@pytest.mark.parametrize("task, text, labels, entity_labels, expected", [
    ("ner", "  ", ["person"], [], "Type or paste a text"),
    ("ner", TEXT, [], [], "Give at least one label"),
    ("questions", TEXT, [], [], "one question a line"),
    ("ner", "x" * 201, ["person"], [], "201 characters; the demo takes up to 200"),
    ("parse", TEXT, ["person"], [], "Unknown task 'parse'"),
    ("relations", TEXT, ["based in"], [], "give the entity labels"),
    ("ner", TEXT, ["per:son"], [], "contains a colon"),  # the answer grammar's own refusal
])
def test_bad_input_comes_back_as_a_message_for_the_page(engine, task, text, labels, entity_labels, expected):
    result = engine.run(task, text, labels, entity_labels)
    assert result.error is not None and expected in result.error and not result.spans


def test_a_saved_pipeline_offers_its_tasks_and_shares_its_loaded_model(seqgpt_tiny, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"model": seqgpt_tiny, "labels": ["person"], "spans_key": "elsewhere"})
    nlp.add_pipe("seqgpt_textcat", config={"model": seqgpt_tiny, "labels": ["sports"]})
    nlp.to_disk(tmp_path / "pipeline")
    saved = DemoEngine(str(tmp_path / "pipeline"))
    assert saved.tasks == ["ner", "textcat"]  # no typing, relations or questions in it
    # the labels typed, not the saved ["person"]; written where the page reads, not to the saved spans_key
    found = saved.run("ner", TEXT, NER_LABELS)
    assert ("Berlin", "location") in [(TEXT[start:end], label) for start, end, label, _ in found.spans]
    asked = next(iter(saved._pipelines.values())).get_pipe("seqgpt_ner")
    assert asked.shared is saved.loaded.get_pipe("seqgpt_ner").shared  # the weights loaded once
    assert "offers ner, textcat" in saved.run("questions", TEXT, ["Who?"]).error
    blank = spacy.blank("en")
    blank.add_pipe("sentencizer")
    blank.to_disk(tmp_path / "plain")
    with pytest.raises(ValueError, match="without SeqGPT components"):
        DemoEngine(str(tmp_path / "plain"))


@given(st.lists(st.text(alphabet="ab ,\n", max_size=6), max_size=6))
def test_typed_labels_are_split_stripped_and_kept_once_in_order(parts):
    text = ",".join(parts)
    labels = split_labels(text)
    expected = [part.strip() for chunk in parts for part in chunk.replace("\n", ",").split(",") if part.strip()]
    assert labels == list(dict.fromkeys(expected))
    assert split_labels("Who met him, and where?\nWhen?", per_line=True) == ["Who met him, and where?", "When?"]


def test_the_page_escapes_what_a_person_typed():
    evil = "<script>alert(1)</script>"
    result = DemoResult("ner", f"{evil} Berlin", spans=[(len(evil) + 1, len(evil) + 7, evil, 0.5)])
    html = render_page(source="m", tasks=["ner"], form={"text": evil, "labels": evil}, result=result)
    assert "<script>" not in html and "&lt;script&gt;" in html
    error = render_page(source="m", tasks=["ner"], form={}, result=DemoResult("ner", error=evil))
    assert "<script>" not in error and 'id="error"' in error


def test_the_server_serves_the_form_and_answers_a_post(engine):
    served = load_script(ROOT / "scripts" / "demo_screenshot.py").served
    with served(engine) as url:
        form = urllib.request.urlopen(url, timeout=30).read().decode()
        assert '<form method="post"' in form and 'value="questions"' in form
        data = urllib.parse.urlencode({"text": TEXT, "task": "ner", "labels": "person"}).encode()
        page = urllib.request.urlopen(url, data=data, timeout=60).read().decode()
        assert 'data-label="person"' in page and "Olaf Scholz" in page and 'id="time"' in page
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url + "elsewhere", timeout=30)


def test_the_command_names_a_model_it_cannot_load_and_a_bad_option(tmp_path):
    from typer.testing import CliRunner

    from spacy_seqgpt.cli import seqgpt_cli

    result = CliRunner().invoke(seqgpt_cli, ["demo", str(tmp_path / "no-such-model")])
    assert result.exit_code == 1 and "could not be loaded" in result.output and "no-such-model" in result.output
    result = CliRunner().invoke(seqgpt_cli, ["demo", str(tmp_path), "--max-chars", "0"])
    assert result.exit_code == 2 and "--max-chars" in result.output
