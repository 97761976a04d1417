"""``seqgpt assemble``: each component asks for the labels the model was trained on, routed by
what the records are about (entities, relations, documents)."""
import spacy
import srsly
from typer.testing import CliRunner

from conftest import ROOT
from spacy_seqgpt.cli import seqgpt_cli
from spacy_seqgpt.data.records import make_record

RELATION = {"head": [0, 3], "tail": [10, 15], "no_relation": "no relation"}


def records():
    entity = make_record("extract", "Tim met Anna.", ["person", "city"], {"person": ["Tim", "Anna"], "city": []},
                         "x", "en")
    category = make_record("classify", "What a match!", ["sports", "politics"], ["sports"], "x", "en")
    relations = [{**make_record("classify", f"what is the relation between Tim and Apple in {text}",
                                ["works for", "no relation"], [answer], "crossre-news", "en"), "pair": RELATION}
                 for text, answer in (("Tim works at Apple.", "works for"), ("Tim and Apple.", "no relation"))]
    return [entity, category, *relations]


def test_relation_labels_go_to_seqgpt_rel_and_the_rest_to_textcat(tmp_path, tiny_bloom):
    srsly.write_jsonl(tmp_path / "train.jsonl", records())
    result = CliRunner().invoke(seqgpt_cli, [
        "assemble", str(ROOT / "configs" / "pipelines" / "seqgpt_560m.cfg"), tiny_bloom, str(tmp_path / "train.jsonl"),
        str(tmp_path / "pipeline"), "--labels", "seqgpt_events=meeting,attack,transport", "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    nlp = spacy.load(tmp_path / "pipeline")
    assert nlp.get_pipe("seqgpt_ner").labels == nlp.get_pipe("seqgpt_typing").labels == ("person",)
    assert nlp.get_pipe("seqgpt_rel").labels == ("works for",)
    assert nlp.get_pipe("seqgpt_textcat").labels == ("sports",)
    assert nlp.get_pipe("seqgpt_events").labels == ("meeting", "attack", "transport")
    assert {nlp.get_pipe(name).max_new_tokens for name in nlp.pipe_names if name.startswith("seqgpt_")} == {8}


def test_labels_for_a_component_not_in_the_pipeline_are_named(tmp_path, tiny_bloom):
    srsly.write_jsonl(tmp_path / "train.jsonl", records())
    result = CliRunner().invoke(seqgpt_cli, [
        "assemble", str(ROOT / "configs" / "pipelines" / "seqgpt_560m.cfg"), tiny_bloom, str(tmp_path / "train.jsonl"),
        str(tmp_path / "pipeline"), "--labels", "seqgpt_nerr=person"])
    assert result.exit_code == 1 and "seqgpt_nerr" in result.output
    assert not (tmp_path / "pipeline").exists()
