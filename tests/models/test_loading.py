"""Model loading: sharing, settings, adapters, and clear errors for what cannot load."""
import re

import pytest
import spacy
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from spacy_seqgpt.models import HFModel, ModelLoadError

from conftest import CAT_LABELS, load, NER_LABELS, ROOT


def add(nlp, factory, model=None, name=None, **config):
    """The component with the model block's settings from ``model`` (a dict) or the short form (a name)."""
    labels = NER_LABELS if factory == "seqgpt_ner" else CAT_LABELS
    if model is not None:
        config["model"] = model
    return nlp.add_pipe(factory, name=name, config={"labels": labels, **config})


def test_components_asking_for_the_same_model_share_one_copy(tiny_bloom):
    nlp = spacy.blank("en")
    ner = add(nlp, "seqgpt_ner", model=tiny_bloom)
    textcat = add(nlp, "seqgpt_textcat", model={"name": tiny_bloom, "device": "cpu", "dtype": "fp32"})
    other_dtype = add(nlp, "seqgpt_textcat", name="textcat_bf16", model={"name": tiny_bloom, "dtype": "bfloat16"})
    assert ner.shared is textcat.shared
    assert ner.shared.model is textcat.shared.model
    assert other_dtype.shared is not ner.shared
    assert next(other_dtype.shared.model.parameters()).dtype == torch.bfloat16


def test_auto_settings_resolve_to_cpu_float32_here():
    spec = HFModel(name="some/model").resolved()
    assert (spec.device, spec.dtype, spec.quantize) == ("cpu", "float32", None)
    assert spec.trust_remote_code is False


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_quantize_on_cpu_is_a_clear_error_at_add_pipe(tiny_bloom, quantize):
    with pytest.raises(ValueError, match=f"quantize='{quantize}' needs a CUDA GPU"):
        add(spacy.blank("en"), "seqgpt_ner", model={"name": tiny_bloom, "quantize": quantize})


@pytest.mark.parametrize(
    "config,message",
    [
        ({"model": {"quantize": "2bit"}}, "'quantize' must be null"),
        ({"model": {"device": "gpu0"}}, "'device' must be"),
        ({"model": {"device": "cuda"}}, "no CUDA GPU is available"),
        ({"model": {"dtype": "int8"}}, "'dtype' must be"),
        ({"model": {"name": ""}}, "'name' must be a hub id or a local folder"),
        ({"model": ""}, "'name' must be a hub id or a local folder"),
        ({"decoding": {"batch_size": 0}}, "'batch_size' must be a positive integer"),
        ({"decoding": {"max_input_tokens": -5}}, "'max_input_tokens' must be a positive integer"),
        ({"decoding": {"num_beams": 0}}, "'num_beams' must be a positive integer"),
        ({"alignment_mode": "fuzzy"}, "'alignment_mode' must be one of"),
        ({"spans_key": ""}, "'spans_key' must be null"),
        ({"label_chunk_size": 0}, "label_chunk_size must be a positive integer"),
        ({"labels": []}, "no labels given"),
        ({"labels": ["person", "a, b"]}, "contains a comma"),
        ({"labels": ["date：time"]}, "full-width colon"),
        ({"labels": {"PER": ""}}, "is empty"),
    ],
)
def test_bad_settings_are_refused_at_add_pipe(tiny_bloom, config, message):
    config = {"model": tiny_bloom, **config}
    if isinstance(config["model"], dict):  # a model block: these settings on the tiny model
        config["model"] = {"name": tiny_bloom, **config["model"]}
    with pytest.raises(ValueError, match=message):
        add(spacy.blank("en"), "seqgpt_ner", **config)


def test_missing_labels_are_refused_at_add_pipe():
    with pytest.raises(ValueError, match="seqgpt_textcat: no labels given"):
        spacy.blank("en").add_pipe("seqgpt_textcat")


def test_a_missing_folder_is_a_clear_error_naming_it(tmp_path):
    nlp = spacy.blank("en")
    add(nlp, "seqgpt_ner", model=str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadError, match=r"nowhere'.*no such folder"):
        nlp("Tim Cook met Olaf Scholz in Berlin.")
    with pytest.raises(ModelLoadError, match="no such folder"):
        nlp.initialize()


def test_a_users_error_handler_sees_the_load_error(tmp_path):
    nlp = spacy.blank("en")
    add(nlp, "seqgpt_ner", model=str(tmp_path / "nowhere"))
    seen = []
    nlp.set_error_handler(lambda name, component, docs, err: seen.append((name, len(docs), type(err))))
    doc = nlp("Tim Cook met Olaf Scholz in Berlin.")
    assert doc.ents == () and seen == [("seqgpt_ner", 1, ModelLoadError)]
    assert list(nlp.pipe(["a", "b"])) == [] and seen[-1] == ("seqgpt_ner", 2, ModelLoadError)


def test_an_unreachable_hub_model_says_how_to_pass_a_local_folder():
    nlp = spacy.blank("en")
    add(nlp, "seqgpt_ner")  # the default, DAMO-NLP/SeqGPT-560M; HF_HUB_OFFLINE is set in conftest
    with pytest.raises(ModelLoadError) as caught:
        nlp("Tim Cook met Olaf Scholz in Berlin.")
    message = str(caught.value)
    assert "DAMO-NLP/SeqGPT-560M" in message and "HF_HUB_OFFLINE" in message
    assert 'config={"model": "path/to/folder"}' in message and "hf download DAMO-NLP/SeqGPT-560M" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained traceback


def test_a_bare_name_that_is_no_folder_is_not_sent_to_the_hub_as_a_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nlp = spacy.blank("en")
    add(nlp, "seqgpt_ner", model="tiny-llama")
    with pytest.raises(ModelLoadError, match=re.escape(f"There is no folder 'tiny-llama' in {tmp_path}, and the hub "
                                                       "cannot be asked")) as caught:
        nlp("Tim Cook met Olaf Scholz in Berlin.")
    assert "hf download" not in str(caught.value)


@pytest.mark.slow  # spaCy's command line in a subprocess
def test_the_seqgpt_command_line_ends_a_model_that_cannot_load_in_one_block(tmp_path):
    """`seqgpt assemble` of the shipped config, offline: the message and the command line's way to
    pass a folder (--vars.model), not a traceback through spaCy."""
    import os
    import subprocess
    import sys

    config = ROOT / "configs" / "pipelines" / "seqgpt_560m.cfg"
    (tmp_path / "train.jsonl").write_text('{"task": "extract", "text": "Tim met Anna.", "labels": ["person"], '
                                          '"answer": {"person": ["Tim"]}, "source": "x", "lang": "en"}\n')
    result = subprocess.run([sys.executable, "-m", "spacy", "seqgpt", "assemble", str(config), "DAMO-NLP/SeqGPT-560M",
                             str(tmp_path / "train.jsonl"), str(tmp_path / "out")],
                            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1 and "Traceback" not in output
    assert "A SeqGPT model could not be loaded" in output and "--vars.model path/to/folder" in output
    assert "config={" not in output and "hf download DAMO-NLP/SeqGPT-560M" in output


def test_a_folder_that_is_not_a_model_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match="Could not load the model"):
        load(tmp_path)


def test_any_causal_lm_folder_works_llama_included(tiny_llama):
    nlp = spacy.blank("en")
    add(nlp, "seqgpt_ner", model=tiny_llama, decoding={"max_new_tokens": 16})
    add(nlp, "seqgpt_textcat", model=tiny_llama, decoding={"max_new_tokens": 8, "num_beams": 2})
    docs = list(nlp.pipe(["Tim Cook met Olaf Scholz in Berlin.", "Apple opened a new office in Paris."]))
    for doc in docs:  # random weights: whatever it answers, the annotations are well formed
        assert all(ent.label_ in NER_LABELS for ent in doc.ents)
        assert set(doc.cats) == set(CAT_LABELS)
    assert nlp.get_pipe("seqgpt_ner").shared.tokenizer.pad_token is not None


def test_a_peft_adapter_is_applied(tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                                LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = AutoTokenizer.from_pretrained(tiny_llama)("Tim Cook met Olaf Scholz", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = peft_model(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_llama)(ids).logits
    shared = load(tiny_llama, adapter=str(tmp_path / "adapter"))
    with torch.no_grad():
        got = shared.model(ids).logits
    assert not torch.allclose(expected, base, atol=1e-4)  # the adapter matters
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ModelLoadError, match="adapter.*no such folder"):
        load(tiny_llama, adapter=str(tmp_path / "missing"))


def test_saved_checkpoints_share_weights_only_when_the_weights_are_equal(tmp_path):
    from spacy_seqgpt.models.tiny import write_tiny_model

    nlp = spacy.blank("en")
    ner = add(nlp, "seqgpt_ner", model=str(write_tiny_model(tmp_path / "tiny")))
    add(nlp, "seqgpt_textcat", model=str(tmp_path / "tiny"))
    nlp.to_disk(tmp_path / "before")
    with torch.no_grad():  # as a training step would, in place
        next(ner.shared.model.parameters()).add_(1.0)
    nlp.to_disk(tmp_path / "after")
    before, after, before_again = (spacy.load(tmp_path / name) for name in ("before", "after", "before"))
    shared = {name: pipeline.get_pipe("seqgpt_ner").shared
              for name, pipeline in (("before", before), ("after", after), ("again", before_again))}
    assert shared["before"] is not shared["after"]
    assert shared["before"] is shared["again"] is before.get_pipe("seqgpt_textcat").shared
    first = lambda s: next(s.model.parameters())  # noqa: E731
    torch.testing.assert_close(first(shared["after"]), first(shared["before"]) + 1.0)


def test_an_unreachable_hub_is_noticed_at_once_and_the_local_cache_is_used(monkeypatch):
    """Without HF_HUB_OFFLINE, a hub that cannot be reached is not asked (its client would retry
    for a minute): the load goes to the local cache, and fails with the error that says why."""
    from spacy_seqgpt.models import loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: the connection is refused
    loading.hub_unreachable.cache_clear()
    try:
        assert loading.hub_access("DAMO-NLP/SeqGPT-560M") == {"local_files_only": True}
        assert loading.hub_access(".") == {}  # a folder never asks the hub
        with pytest.raises(ModelLoadError, match=r"http://127.0.0.1:9 cannot be reached"):
            load("DAMO-NLP/SeqGPT-560M")
    finally:
        loading.hub_unreachable.cache_clear()


def test_loading_and_saving_draw_no_progress_bars(tiny_bloom, tmp_path, capfd):
    nlp = spacy.blank("en")
    add(nlp, "seqgpt_ner", model=tiny_bloom, decoding={"max_new_tokens": 4})
    nlp("Anna flew to Paris.")
    nlp.to_disk(tmp_path / "saved")
    spacy.load(tmp_path / "saved")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err
