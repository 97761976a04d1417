"""The shipped configs: the pipeline config assembles and runs offline, every training config
parses, and the project's presets name training configs that exist."""
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

import pytest
import spacy
import torch
from spacy.schemas import ConfigSchemaTraining
from spacy.util import load_config, load_model_from_config, registry
from conftest import ROOT

from spacy_seqgpt.training.settings import STAGES, load_settings

CONFIGS = ROOT / "configs"
TRAINING_CONFIGS = sorted((CONFIGS / "training").glob("*.cfg"))


@pytest.mark.slow  # spacy assemble and spacy project in subprocesses
def test_seqgpt_560m_config_assembles_with_a_local_model(tmp_path, tiny_bloom):
    out = tmp_path / "pipeline"
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "assemble", str(CONFIGS / "pipelines" / "seqgpt_560m.cfg"), str(out),
         "--vars.model", tiny_bloom],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr
    nlp = spacy.load(out)
    assert nlp.pipe_names == ["sentencizer", "seqgpt_ner", "seqgpt_typing", "seqgpt_rel", "seqgpt_textcat",
                              "seqgpt_events", "seqgpt_questions"]
    assert nlp.get_pipe("seqgpt_ner").labels == ("person", "organization", "location", "miscellaneous")
    assert len({id(nlp.get_pipe(name).shared) for name in nlp.pipe_names[1:]}) == 1
    assert sorted(p.parent.name for p in out.glob("*/model")) == ["seqgpt_ner"]  # one copy of the weights
    doc = nlp("First sentence. Second one.")
    assert set(doc.cats) == {"sports", "politics", "business", "technology"}
    assert "types" in doc.spans and "events" in doc.spans and isinstance(doc._.rel, Mapping)


def test_the_tagger_pipeline_sources_a_trained_tagger_and_adds_seqgpt_on_its_entities(tmp_path, tiny_llama, tiny_bloom):
    """Every component assembles from configs/pipelines/: the tagger as trained (sourced), then
    typing and relations on its entities."""
    tagger_nlp = spacy.blank("en")
    tagger_nlp.add_pipe("llm_unmasked_tagger", config={"model": {"name": tiny_llama, "unmask": "1111"}})
    tagger_nlp.get_pipe("llm_unmasked_tagger").initialize(labels=["person", "city"])
    tagger_nlp.to_disk(tmp_path / "tagger")
    config = load_config(CONFIGS / "pipelines" / "tagger_seqgpt.cfg", interpolate=True,
                         overrides={"vars.tagger": str(tmp_path / "tagger"), "vars.model": tiny_bloom})
    load_model_from_config(config, auto_fill=True).to_disk(tmp_path / "pipeline")
    nlp = spacy.load(tmp_path / "pipeline")
    assert nlp.pipe_names == ["llm_unmasked_tagger", "seqgpt_typing", "seqgpt_rel"]
    assert nlp.get_pipe("llm_unmasked_tagger").labels == ("person", "city")
    assert nlp.get_pipe("seqgpt_typing").shared is nlp.get_pipe("seqgpt_rel").shared
    doc = nlp("Anna met Tom in Paris.")
    entities = {(ent.start, ent.end) for ent in doc.ents}
    assert all((span.start, span.end) in entities for span in doc.spans["types"]) and isinstance(doc._.rel, Mapping)


def test_configs_are_split_by_kind():
    assert sorted(p.name for p in (CONFIGS / "pipelines").glob("*.cfg")) == ["seqgpt_560m.cfg", "tagger_seqgpt.cfg"]
    assert {p.name for p in TRAINING_CONFIGS} >= {"seqgpt_tiny.cfg", "seqgpt_560m.cfg", "tagger_tiny.cfg"}
    assert not list(CONFIGS.glob("*.cfg"))  # nothing left unsorted


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda path: path.name)
def test_every_training_config_parses(path):
    if path.name.startswith("seqgpt_"):  # `seqgpt train` configs: both stages
        for stage in STAGES:
            settings = load_settings(path, stage)
            assert settings.stage == stage and settings.train.steps > 0 and settings.max_length > 0
        return
    # `spacy train` configs: the pipeline builds (the model loads at initialize) and [training] resolves.
    overrides = {} if torch.cuda.is_available() else {"components.llm_unmasked_tagger.model.quantize": None}
    config = load_config(path, overrides=overrides, interpolate=True)
    nlp = load_model_from_config(config, auto_fill=True)
    assert nlp.pipe_names == ["llm_unmasked_tagger"]
    assert nlp.get_pipe("llm_unmasked_tagger").settings.model.name == config["paths"]["model"]
    training = registry.resolve(config["training"], schema=ConfigSchemaTraining)
    assert training["max_steps"] >= 0 and training["optimizer"] is not None


def test_the_smollm2_presets_start_from_smollm2_and_convert_the_shared_datasets_first():
    from spacy_seqgpt.cli.preset import config_section

    for name in ("seqgpt_smollm2.cfg", "seqgpt_smollm2-full.cfg"):
        path = CONFIGS / "training" / name
        paths, corpus = config_section(path, "paths"), config_section(path, "corpus")
        assert (paths["base_source"], paths["base_model"]) == ("smollm2-135m", "training/smollm2-base")
        assert corpus["data_dirs"] == ["assets/full", "../shared/datasets", "assets/datasets"]
    cpu = load_settings(CONFIGS / "training" / "seqgpt_smollm2.cfg", "pt")
    assert cpu.mixed_precision == "bf16" and cpu.train.pass_through_without_data and cpu.train.fallback_data is None


def test_the_560m_preset_is_bloomz_560m_on_packed_rows_of_1024():
    settings = load_settings(CONFIGS / "training" / "seqgpt_560m.cfg", "pt")
    assert (settings.base_model, settings.max_length, settings.packing, settings.gradient_checkpointing) == (
        "bigscience/bloomz-560m", 1024, True, True)
    assert (settings.train.steps, load_settings(CONFIGS / "training" / "seqgpt_560m.cfg", "ft").train.steps) == (
        10000, 5000)


@pytest.mark.slow  # spacy assemble and spacy project in subprocesses
@pytest.mark.parametrize("preset", ["tiny", "smollm2", "smollm2-full", "560m"])
def test_project_training_commands_name_the_presets_training_config(preset, tmp_path):
    """`spacy project run` (dry) prints the commands it would run: each names a training config
    that exists and parses, for every preset."""
    shutil.copy(ROOT / "project.yml", tmp_path)  # a run makes the project's folders: not in the checkout
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "project", "run", "train", str(tmp_path), "--vars.preset", preset, "--dry"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    named = [word for line in result.stdout.splitlines() if "seqgpt train" in line
             for word in line.split() if word.endswith(".cfg")]
    assert named == [f"configs/training/seqgpt_{preset}.cfg"] * 2, result.stdout
    for stage in STAGES:
        load_settings(ROOT / named[0], stage)
