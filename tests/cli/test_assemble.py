"""``seqgpt assemble``: each component asks for the labels the model was trained on, routed by
what the records are about (entities, relations, documents)."""
import pytest
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
    assert {nlp.get_pipe(name).decoding.max_new_tokens for name in nlp.pipe_names if name.startswith("seqgpt_")} == {8}


@pytest.mark.parametrize("options, expected", [
    (["--labels", "seqgpt_nerr=person"], "--labels names ['seqgpt_nerr'], which are not in the pipeline"),
    (["--labels", "seqgpt_ner="], "no label for seqgpt_ner"),
    (["--labels", "seqgpt_ner=,,,"], "no label for seqgpt_ner"),
    (["--labels", "seqgpt_ner=person,,city"], "an empty label for seqgpt_ner"),
    (["--labels", "seqgpt_ner=person", "--labels", "seqgpt_ner=city"], "names seqgpt_ner twice"),
    (["--labels", "seqgpt_questions=who,what"], "which take no labels"),
    (["--max-labels", "-1"], "--max-labels and --max-new-tokens are 0"),
    (["--labels", "seqgpt_ner=per:son"], "seqgpt_ner"),  # the component's own check of a label, in one block
])
def test_labels_the_command_cannot_use_are_named_and_nothing_is_written(tmp_path, tiny_bloom, options, expected):
    srsly.write_jsonl(tmp_path / "train.jsonl", records())
    result = CliRunner().invoke(seqgpt_cli, [
        "assemble", str(ROOT / "configs" / "pipelines" / "seqgpt_560m.cfg"), tiny_bloom, str(tmp_path / "train.jsonl"),
        str(tmp_path / "pipeline"), *options])
    assert result.exit_code == 1 and expected in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and not (tmp_path / "pipeline").exists()
