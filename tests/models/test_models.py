"""The model layer: one loader for every user, and the model as a registered sub-config."""
import json
import shutil

import pytest
import spacy
from spacy.util import load_model_from_config

from conftest import CAT_LABELS, EXAMPLES, load, NER_LABELS, TINY_TRAINING_CONFIG
from spacy_seqgpt.models import HFModel, ModelLoadError, load_pretrained
from spacy_seqgpt.training.settings import load_settings
from spacy_seqgpt.training.trainer import load_for_training

TEXTS = [text for lang, text, _, _ in EXAMPLES if lang == "en"]


def without_tokens(model_dir, out, *keys, model_eos=True):
    """A copy of a tiny model whose tokenizer names none of ``keys`` (and, unless ``model_eos``,
    whose config names no end-of-sequence token either)."""
    shutil.copytree(model_dir, out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    for key in keys:
        config.pop(key, None)
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    if not model_eos:
        for name in ("config.json", "generation_config.json"):
            settings = json.loads((out / name).read_text())
            settings["eos_token_id"] = None  # (absent, Llama's config class would default to 2)
            (out / name).write_text(json.dumps(settings))
    return out


def test_a_tokenizer_without_eos_and_pad_is_completed_the_same_for_every_user(tiny_llama, tmp_path):
    path = without_tokens(tiny_llama, tmp_path / "bare", "eos_token", "pad_token")
    seqgpt = load(path).tokenizer
    nlp = spacy.blank("en")
    tagger = nlp.add_pipe("llm_unmasked_tagger", config={"model": {"name": str(path), "device": "cpu"}})
    tagger.initialize(labels=["PER"])
    tagged = tagger.classifier.tokenizer
    overrides = {"paths.base_model": str(path), "paths.output": str(tmp_path / "out")}
    settings = load_settings(TINY_TRAINING_CONFIG, "pt", overrides)
    trained = load_for_training(settings, str(path))[1]
    for tokenizer in (seqgpt, tagged, trained):
        # the end of sequence from the model's config; padding with it
        assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("</s>", 2)
        assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tagger.classifier.model.config.pad_token_id == 2


def test_no_end_of_sequence_anywhere_is_an_error_for_a_causal_lm_only(tiny_llama, tmp_path):
    path = without_tokens(tiny_llama, tmp_path / "bare", "eos_token", "pad_token", model_eos=False)
    spec = HFModel(name=str(path)).resolved()
    with pytest.raises(ModelLoadError, match="no end-of-sequence token"):
        load_pretrained(spec)
    model, tokenizer = load_pretrained(spec, task="token_classification", tags=["O", "B-PER", "I-PER"])
    assert tokenizer.eos_token is None and tokenizer.pad_token == "<unk>"  # padding falls back to unknown
    assert model.config.num_labels == 3


def test_the_loader_refuses_bad_input_with_clear_errors(tiny_llama, tmp_path):
    spec = HFModel(name=tiny_llama).resolved()
    with pytest.raises(ValueError, match="task must be one of"):
        load_pretrained(spec, task="seq2seq")
    with pytest.raises(ModelLoadError, match="tokenizer.*no such folder"):
        load_pretrained(spec, tokenizer_source=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="Could not load the model"):
        load_pretrained(spec, source=str(tmp_path / "empty"))


def test_every_default_is_in_the_model_block_of_default_config():
    nlp = spacy.blank("en")
    for factory, name in (("seqgpt_ner", "DAMO-NLP/SeqGPT-560M"), ("seqgpt_textcat", "DAMO-NLP/SeqGPT-560M"),
                          ("llm_unmasked_tagger", "mistralai/Mistral-7B-v0.1")):
        block = nlp.get_factory_meta(factory).default_config["model"]
        assert block == {"@seqgpt_models": "spacy_seqgpt.HFModel.v1", "name": name, "device": "auto",
                         "dtype": "float32" if factory == "llm_unmasked_tagger" else "auto", "quantize": None,
                         "adapter": None, "trust_remote_code": False,
                         "unmask": "0110" if factory == "llm_unmasked_tagger" else None}


def test_the_short_form_and_the_block_give_the_same_model(tiny_bloom):
    nlp = spacy.blank("en")
    short = nlp.add_pipe("seqgpt_ner", name="short", config={"labels": NER_LABELS, "model": tiny_bloom})
    block = nlp.add_pipe("seqgpt_ner", name="block", config={"labels": NER_LABELS, "model": {"name": tiny_bloom}})
    assert short.spec == block.spec and short.shared is block.shared
    tagger = nlp.add_pipe("llm_unmasked_tagger", config={"model": tiny_bloom})
    assert (tagger.settings.model.unmask, tagger.settings.model.dtype) == ("0110", "float32")  # the tagger's defaults


def test_a_registered_model_function_can_load_differently(tiny_bloom):
    from spacy.util import registry

    loaded = []

    class CountingModel(HFModel):
        def load(self, **kwargs):
            loaded.append(kwargs["task"])
            return super().load(**kwargs)

    registry.seqgpt_models.register("test.CountingModel.v1", func=CountingModel)
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("seqgpt_ner", config={"labels": NER_LABELS, "model": {
        "@seqgpt_models": "test.CountingModel.v1", "name": tiny_bloom, "dtype": "bfloat16"},
        "decoding": {"max_new_tokens": 4}})
    nlp("Anna flew to Paris.")
    assert loaded == ["causal_lm"] and isinstance(ner.spec, CountingModel)


def annotations(nlp):
    return [([(e.start_char, e.end_char, e.label_) for e in doc.ents], doc.cats) for doc in nlp.pipe(TEXTS)]


def test_the_config_round_trips_and_rebuilds_the_same_pipeline(seqgpt_tiny):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"labels": NER_LABELS, "model": {"name": seqgpt_tiny, "device": "cpu"}})
    nlp.add_pipe("seqgpt_textcat", config={"labels": CAT_LABELS, "model": seqgpt_tiny, "probabilities": True})
    text = nlp.config.to_str()
    block = text[text.index("[components.seqgpt_ner.model]"):].split("\n\n")[0]
    assert '@seqgpt_models = "spacy_seqgpt.HFModel.v1"' in block and 'device = "cpu"' in block
    rebuilt = load_model_from_config(spacy.util.load_config_from_str(text), auto_fill=True)
    assert rebuilt.config.to_str() == text
    assert rebuilt.get_pipe("seqgpt_ner").spec == nlp.get_pipe("seqgpt_ner").spec
    assert annotations(rebuilt) == annotations(nlp)


def test_model_settings_outside_the_model_block_are_named(seqgpt_tiny):
    """Model settings belong in [components.<name>.model]; one given next to ``model`` (as an
    unreleased 0.1 config had them) is refused with its name, for every component."""
    from thinc.api import ConfigValidationError

    for factory, config in (("seqgpt_ner", {"labels": NER_LABELS}), ("llm_unmasked_tagger", {})):
        with pytest.raises(ConfigValidationError, match="device"):
            spacy.blank("en").add_pipe(factory, config={**config, "model": seqgpt_tiny, "device": "cpu"})
