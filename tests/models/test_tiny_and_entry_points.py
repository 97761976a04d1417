"""init-tiny writes loadable, reproducible models; factories and CLI come through entry points."""
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from spacy_seqgpt.models.tiny import write_tiny_model

pytestmark = pytest.mark.slow  # the commands and entry points in fresh processes


def run_python(code, *args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, *args] if not code else [sys.executable, "-c", code, *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_init_tiny_cli_writes_a_loadable_llama(tmp_path):
    out = tmp_path / "tiny-llama"
    result = run_python(None, "-m", "spacy", "seqgpt", "init-tiny", str(out), "--arch", "llama", "--seed", "3")
    assert result.returncode == 0, result.stderr
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 4
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA, for the kernels
    assert model.config.vocab_size == len(tokenizer)
    assert sum(f.stat().st_size for f in out.iterdir()) < 10e6


def test_init_tiny_cli_refuses_an_unknown_architecture(tmp_path):
    result = run_python(None, "-m", "spacy", "seqgpt", "init-tiny", str(tmp_path / "x"), "--arch", "gpt2")
    assert result.returncode != 0
    assert "gpt2" in result.stderr and "bloom" in result.stderr


def test_bloom_head_dim_fits_the_kernels(tiny_bloom):
    config = AutoModelForCausalLM.from_pretrained(tiny_bloom).config
    assert config.model_type == "bloom" and config.n_layer == 4
    assert config.hidden_size // config.n_head == 32


@pytest.mark.parametrize("arch", ["bloom", "llama"])
def test_same_seed_same_files_other_seed_other_weights(tmp_path, arch):
    first, second, other = (write_tiny_model(tmp_path / name, arch, seed=seed)
                            for name, seed in (("a", 7), ("b", 7), ("c", 8)))
    names = sorted(f.name for f in first.iterdir())
    assert names == sorted(f.name for f in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()
    assert (first / "tokenizer.json").read_bytes() == (other / "tokenizer.json").read_bytes()


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_bloom):
    return AutoTokenizer.from_pretrained(tiny_bloom)


@settings(deadline=None, max_examples=200)
@given(text=st.text(max_size=200))
def test_byte_level_tokenizer_round_trips_any_unicode(tiny_tokenizer, text):
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text


def test_factories_and_cli_register_through_entry_points(tiny_bloom):
    code = textwrap.dedent(
        """
        import sys, spacy
        nlp = spacy.blank("en")
        nlp.add_pipe("seqgpt_ner", config={"labels": ["person"], "model": sys.argv[1]})
        nlp.add_pipe("seqgpt_textcat", config={"labels": ["sports"], "model": sys.argv[1]})
        print(nlp.pipe_names, type(nlp.get_pipe("seqgpt_ner")).__module__)
        """
    )
    result = run_python(code, tiny_bloom)
    assert result.returncode == 0, result.stderr
    assert "['seqgpt_ner', 'seqgpt_textcat'] spacy_seqgpt.components.ner" in result.stdout
    help_text = run_python(None, "-m", "spacy", "seqgpt", "--help")
    assert help_text.returncode == 0 and "init-tiny" in help_text.stdout
