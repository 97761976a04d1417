"""Precision on a CPU: ``dtype = "auto"`` (bfloat16 where the processor computes it natively) and
``quantize = "int8"`` (torch's dynamic int8 linear layers) answer as float32 does, train only in
float32 weights, and save the float32 weights they were narrowed from."""
import pytest
import spacy
import torch
from safetensors import safe_open

from conftest import CAT_LABELS, EXAMPLES, NER_LABELS
from spacy_seqgpt import SeqGPT
from spacy_seqgpt.models import HFModel
from spacy_seqgpt.models import spec as spec_module

TEXTS = [text for _, text, _, _ in EXAMPLES]
# How far a span's or a category's score (a probability) may move from float32's: bfloat16 keeps
# 8 bits of mantissa, int8 layers about as many; the taught answers win by a margin far above it.
SCORE_TOLERANCE = 0.05


@pytest.fixture
def detection(monkeypatch):
    """Set how ``cpu_computes_bf16`` decides, then ask it afresh (it is asked once a process)."""
    def decide(env=None, **probes):
        if env is None:
            monkeypatch.delenv("SEQGPT_CPU_BF16", raising=False)
        else:
            monkeypatch.setenv("SEQGPT_CPU_BF16", env)
        for name, value in probes.items():
            monkeypatch.setattr(torch.cpu, name, lambda value=value: value, raising=False)
        spec_module.cpu_computes_bf16.cache_clear()
        return spec_module.cpu_computes_bf16()

    yield decide
    spec_module.cpu_computes_bf16.cache_clear()


def test_auto_is_bfloat16_where_the_cpu_computes_it_and_float32_where_weights_train(detection):
    assert detection(_is_avx512_bf16_supported=True, _is_amx_tile_supported=False) is True
    assert HFModel(name="m", device="cpu").resolved().dtype == "bfloat16"
    assert HFModel(name="m", device="cpu").resolved(trains=True).dtype == "float32"
    assert HFModel(name="m", device="cpu", quantize="int8").resolved().dtype == "float32"
    assert HFModel(name="m", device="cpu", dtype="float32").resolved().dtype == "float32"
    assert detection(_is_avx512_bf16_supported=False, _is_amx_tile_supported=True) is True
    assert detection(_is_avx512_bf16_supported=False, _is_amx_tile_supported=False) is False
    assert HFModel(name="m", device="cpu").resolved().dtype == "float32"
    assert detection("1", _is_avx512_bf16_supported=False) is True  # the variable decides over the probes
    assert detection("0", _is_avx512_bf16_supported=True) is False
    from spacy_seqgpt.training.trainer import mixed_precision

    assert mixed_precision("auto") == "no" and mixed_precision("bf16") == "bf16"
    detection("1")
    assert mixed_precision("auto") == "bf16"


def test_int8_is_refused_where_it_cannot_run(seqgpt_tiny, tiny_llama):
    with pytest.raises(ValueError, match="'quantize' must be .*\"int8\""):
        HFModel(name="m", quantize="int4")
    with pytest.raises(ValueError, match="int8.*float32.*not 'bfloat16'"):
        HFModel(name="m", device="cpu", quantize="int8", dtype="bfloat16").resolved()
    with pytest.raises(ValueError, match="int8 weights cannot be trained"):
        HFModel(name="m", device="cpu", quantize="int8").resolved(trains=True)
    with pytest.raises(ValueError, match="8bit.*needs a CUDA GPU.*\"int8\""):
        HFModel(name="m", device="cpu", quantize="8bit").resolved()
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="int8 weights cannot be trained"):
        nlp.add_pipe("llm_unmasked_tagger", config={"model": {"name": tiny_llama, "quantize": "int8"}})


def answers(model_block):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"model": model_block, "labels": NER_LABELS})
    nlp.add_pipe("seqgpt_textcat", config={"model": model_block, "labels": CAT_LABELS})
    docs = list(nlp.pipe(TEXTS))
    ents = [[(e.start_char, e.end_char, e.label_, e._.seqgpt_score) for e in doc.ents] for doc in docs]
    return ents, [doc.cats for doc in docs], nlp


@pytest.mark.parametrize("narrowed", [{"dtype": "bfloat16"}, {"quantize": "int8"}])
def test_bfloat16_and_int8_answer_as_float32_on_the_taught_model(seqgpt_tiny, narrowed):
    wide_ents, wide_cats, _ = answers({"name": seqgpt_tiny, "dtype": "float32"})
    ents, cats, nlp = answers({"name": seqgpt_tiny, **narrowed})
    assert [[e[:3] for e in doc] for doc in ents] == [[e[:3] for e in doc] for doc in wide_ents]
    assert any(wide_ents)
    for doc, wide in zip(ents, wide_ents):
        assert all(abs(e[3] - w[3]) <= SCORE_TOLERANCE for e, w in zip(doc, wide)), (doc, wide)
    for got, wide in zip(cats, wide_cats):
        assert max(got, key=got.get) == max(wide, key=wide.get)
        assert all(abs(got[label] - wide[label]) <= SCORE_TOLERANCE for label in CAT_LABELS), (got, wide)
    model = nlp.get_pipe("seqgpt_ner").shared.model
    if "quantize" in narrowed:  # every linear layer but the output is int8; the output stays float
        from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

        plain = [m for m in model.modules() if type(m) is torch.nn.Linear]
        assert plain == [model.get_output_embeddings()]
        assert sum(isinstance(m, Int8Linear) for m in model.modules()) >= 4 * model.config.num_hidden_layers
    else:
        assert next(model.parameters()).dtype == torch.bfloat16


def test_the_real_model_answers_in_bfloat16_as_in_float32(smollm2):
    """SmolLM2 was not taught the prompts: its greedy answers are its own, and bfloat16 must
    write the same ones, each span's score within the tolerance."""
    wide = SeqGPT({"name": smollm2, "dtype": "float32"}).extract(TEXTS, NER_LABELS)
    narrow = SeqGPT({"name": smollm2, "dtype": "bfloat16"}).extract(TEXTS, NER_LABELS)
    assert any(wide)
    assert [[(s["start"], s["end"], s["label"]) for s in doc] for doc in narrow] == \
        [[(s["start"], s["end"], s["label"]) for s in doc] for doc in wide]
    for doc, wide_doc in zip(narrow, wide):
        assert all(abs(s["score"] - w["score"]) <= SCORE_TOLERANCE for s, w in zip(doc, wide_doc)), (doc, wide_doc)


def test_a_pipeline_narrowed_on_a_cpu_saves_the_float32_weights_it_came_from(seqgpt_tiny, tmp_path):
    _, _, reference = answers({"name": seqgpt_tiny, "dtype": "float32"})
    reference.to_disk(tmp_path / "wide")
    ents, cats, nlp = answers({"name": seqgpt_tiny, "quantize": "int8"})
    nlp.to_disk(tmp_path / "int8")
    files = {name: sorted((tmp_path / name).rglob("model.safetensors")) for name in ("wide", "int8")}
    assert len(files["int8"]) == 1  # the two components share one copy
    with safe_open(files["wide"][0], "pt") as wide, safe_open(files["int8"][0], "pt") as narrow:
        assert sorted(wide.keys()) == sorted(narrow.keys())
        for key in wide.keys():
            assert narrow.get_tensor(key).dtype == torch.float32
            assert torch.equal(wide.get_tensor(key), narrow.get_tensor(key)), key
    loaded = spacy.load(tmp_path / "int8")  # int8 again, from the saved float32 weights
    docs = list(loaded.pipe(TEXTS))
    assert [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in docs] == \
        [[e[:3] for e in doc] for doc in ents]
    assert [doc.cats for doc in docs] == cats
