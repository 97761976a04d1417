"""llm_unmasked_tagger on tiny local decoders: training, decoding, probabilities, saving, errors."""
import random

import numpy
import pytest
import spacy
import srsly
import torch
from seqeval.metrics import f1_score
from seqeval.scheme import IOB2
from spacy.training import Example
from spacy.util import load_config, registry
from thinc.api import Adam
from conftest import ROOT

from spacy_seqgpt.data.conll import create_conll_corpus, read_docs, read_sentences
from spacy_seqgpt.models import ModelLoadError
from spacy_seqgpt.text.iob import tags_from_spans
from spacy_seqgpt.models.torch_optimizer import step, torch_optimizer
from spacy_seqgpt.training.sweep import run_sweep


CONFIGS = ROOT / "configs" / "training"
N_SENTENCES = 32


@pytest.fixture(scope="module")
def entity_file(conll_sample, tmp_path_factory):
    """The shipped WNUT-17 sample's sentences that hold an entity, as a CoNLL file: most tweets hold
    none, and a tagger that is to fit a few sentences needs some to fit."""
    sentences = [(tokens, tags) for path in conll_sample for tokens, tags in read_sentences(path)
                 if any(tag != "O" for tag in tags)]
    path = tmp_path_factory.mktemp("conll") / "entities.conll"
    path.write_text("\n\n".join("\n".join(f"{t}\t{g}" for t, g in zip(*s)) for s in sentences) + "\n",
                    encoding="utf8")
    return path


def conll_examples(nlp, path, limit):
    """As ``spacy train`` reads them: the predicted side keeps the file's tokens."""
    return list(create_conll_corpus(path, limit)(nlp))


MODEL_KEYS = ("unmask", "quantize", "dtype", "adapter")


def tagger_nlp(model, **config):
    """A pipeline with the tagger on ``model``; the model block's settings among ``config`` go in the block."""
    block = {"name": model, "device": "cpu", **{key: config.pop(key) for key in MODEL_KEYS if key in config}}
    nlp = spacy.blank("en")
    nlp.add_pipe("llm_unmasked_tagger", config={"model": block, **config})
    return nlp


def predictions(nlp, texts):
    """(entities, confidences) of each text: what a saved and reloaded pipeline must reproduce."""
    out = []
    for doc in nlp.pipe(texts):
        out.append(([(e.start, e.end, e.label_) for e in doc.ents], [e._.seqgpt_score for e in doc.ents]))
    return out


@pytest.fixture(scope="module")
def trained_bloom(tiny_bloom, entity_file):
    """A tiny BLOOM tagger (LoRA, "0110") trained with nlp.update until it fits 32 sentences."""
    random.seed(0)
    torch.manual_seed(0)
    nlp = tagger_nlp(tiny_bloom, unmask="0110")
    examples = conll_examples(nlp, entity_file, N_SENTENCES)
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.005)
    for epoch in range(80):
        random.shuffle(examples)
        for start in range(0, len(examples), 8):
            nlp.update(examples[start : start + 8], sgd=optimizer)
        if epoch % 5 == 4 and nlp.evaluate(examples)["ents_f"] >= 0.97:
            break
    return nlp, examples


@pytest.mark.slow  # trains a tagger until it fits
def test_nlp_update_overfits_conll_with_tiny_bloom(trained_bloom):
    nlp, examples = trained_bloom
    assert nlp.evaluate(examples)["ents_f"] >= 0.95


@pytest.mark.slow  # trains a tagger until it fits
def test_spacy_train_overfits_conll_with_tiny_llama(tmp_path, tiny_llama, entity_file):
    from spacy.cli.train import train

    train_file = str(entity_file)
    train(CONFIGS / "tagger_tiny.cfg", tmp_path, overrides={
        "paths.model": tiny_llama, "paths.train": train_file, "paths.dev": train_file})
    best = spacy.load(tmp_path / "model-best")
    examples = conll_examples(best, entity_file, N_SENTENCES)
    scores = best.evaluate(examples)
    assert scores["ents_f"] >= 0.95
    assert scores["ents_f"] == pytest.approx(
        srsly.read_json(tmp_path / "model-best" / "meta.json")["performance"]["ents_f"]
    )
    tagger = best.get_pipe("llm_unmasked_tagger")
    assert tagger.labels == tuple(sorted({ent.label_ for eg in examples for ent in eg.reference.ents}))
    assert tagger.classifier.model.peft_config["default"].r == 64  # the paper's LoRA settings


@pytest.mark.slow  # trains a tagger until it fits
def test_saved_pipeline_predicts_the_same(tmp_path, trained_bloom, entity_file):
    nlp, _ = trained_bloom
    texts = [doc.text for doc in read_docs(nlp.vocab, entity_file, 40)]
    expected = predictions(nlp, texts)
    assert any(ents for ents, _ in expected)
    nlp.to_disk(tmp_path / "full")
    assert (tmp_path / "full" / "llm_unmasked_tagger" / "base").is_dir()
    assert predictions(spacy.load(tmp_path / "full"), texts) == expected
    restored = tagger_nlp(nlp.get_pipe("llm_unmasked_tagger").settings.model.name, unmask="0110")
    restored.get_pipe("llm_unmasked_tagger").from_bytes(nlp.get_pipe("llm_unmasked_tagger").to_bytes())
    assert predictions(restored, texts) == expected


@pytest.mark.slow  # trains a tagger until it fits
def test_pipeline_saved_without_base_weights_loads_them_from_the_config_and_reads_only_checked_files(
        tmp_path, trained_bloom, conll_sample):
    """The base of a tagger saved without it is the config's model, never a path in its cfg; every
    saved file is covered by weights_id; a config that trusts remote code is refused."""
    nlp, _ = trained_bloom
    texts = [doc.text for doc in read_docs(nlp.vocab, conll_sample[1], 10)]
    tagger = nlp.get_pipe("llm_unmasked_tagger")
    tagger.store_base_weights = False
    try:
        nlp.to_disk(tmp_path / "light")
    finally:
        tagger.store_base_weights = True
    folder = tmp_path / "light" / "llm_unmasked_tagger"
    assert not (folder / "base").exists() and (folder / "adapter").is_dir()
    cfg = srsly.read_json(folder / "cfg")
    srsly.write_json(folder / "cfg", {**cfg, "source_model": str(tmp_path / "elsewhere")})
    assert predictions(spacy.load(tmp_path / "light"), texts) == predictions(nlp, texts)
    adapter_config = srsly.read_json(folder / "adapter" / "adapter_config.json")
    srsly.write_json(folder / "adapter" / "adapter_config.json", {**adapter_config, "r": 2})
    with pytest.raises(ModelLoadError, match="not the ones the pipeline saved"):
        spacy.load(tmp_path / "light")
    srsly.write_json(folder / "adapter" / "adapter_config.json", adapter_config)
    config = (tmp_path / "light" / "config.cfg").read_text()
    assert "trust_remote_code = false" in config
    (tmp_path / "light" / "config.cfg").write_text(
        config.replace("trust_remote_code = false", "trust_remote_code = true")
    )
    with pytest.raises(ModelLoadError, match="trust_remote_code = true.*never run"):
        spacy.load(tmp_path / "light")


@pytest.mark.slow  # trains a tagger until it fits
def test_scorer_ents_f_equals_seqeval_strict_iob2(trained_bloom, entity_file):
    nlp, _ = trained_bloom
    dev = conll_examples(nlp, entity_file, 100)  # the first 32 were learnt, the rest were not
    for eg, doc in zip(dev, nlp.pipe([eg.predicted for eg in dev])):
        eg.predicted = doc
    scores = nlp.get_pipe("llm_unmasked_tagger").score(dev)
    gold = [tags_from_spans(len(eg.reference), [(e.start, e.end, e.label_) for e in eg.reference.ents]) for eg in dev]
    guess = [tags_from_spans(len(eg.predicted), [(e.start, e.end, e.label_) for e in eg.predicted.ents]) for eg in dev]
    expected = f1_score(gold, guess, mode="strict", scheme=IOB2)
    assert 0.0 < expected < 1.0  # a non-trivial case: some right, some wrong
    assert scores["ents_f"] == pytest.approx(expected)


def test_spans_key_writes_scored_span_groups(tiny_llama):
    nlp = tagger_nlp(tiny_llama, unmask="1111", spans_key="sc")
    nlp.get_pipe("llm_unmasked_tagger").initialize(lambda: [], labels=["PER", "LOC"])
    doc = nlp.make_doc("Peter Blackburn flew to Berlin on Monday .")
    doc.ents = [spacy.tokens.Span(doc, 0, 2, "PERSON")]
    doc = nlp(doc)
    group = doc.spans["sc"]
    assert [e.label_ for e in doc.ents] == ["PERSON"]  # entities are left alone
    assert len(group.attrs["scores"]) == len(group)
    assert all(0.0 <= s <= 1.0 for s in group.attrs["scores"])
    assert {span.label_ for span in group} <= {"PER", "LOC"}


def test_training_from_span_groups(tiny_llama):
    nlp = tagger_nlp(tiny_llama, spans_key="sc")
    reference = nlp.make_doc("Peter Blackburn visited Berlin .")
    reference.spans["sc"] = [spacy.tokens.Span(reference, 0, 2, "PER"), spacy.tokens.Span(reference, 3, 4, "LOC")]
    examples = [Example(nlp.make_doc(reference.text), reference)]
    nlp.initialize(lambda: examples)
    assert nlp.get_pipe("llm_unmasked_tagger").labels == ("LOC", "PER")
    optimizer = Adam(0.01)
    losses = [nlp.update(examples, sgd=optimizer)["llm_unmasked_tagger"] for _ in range(15)]
    assert losses[-1] < losses[0] / 2


def test_unmasked_groups_let_a_token_see_the_right(tiny_llama):
    """The first token's scores depend on the last word only when its layers look right."""
    first_token_scores = {}
    for code in ("0000", "1111"):
        nlp = tagger_nlp(tiny_llama, unmask=code)
        nlp.get_pipe("llm_unmasked_tagger").initialize(labels=["PER"])
        tagger = nlp.get_pipe("llm_unmasked_tagger")
        a, b = tagger.predict([nlp.make_doc("Peter went home"), nlp.make_doc("Peter went away")])
        first_token_scores[code] = numpy.abs(a[0] - b[0]).max()
    assert first_token_scores["0000"] < 1e-6
    assert first_token_scores["1111"] > 1e-4


def test_long_docs_are_windowed(tiny_llama):
    nlp = tagger_nlp(tiny_llama, max_input_tokens=12)
    tagger = nlp.get_pipe("llm_unmasked_tagger")
    tagger.initialize(labels=["PER"])
    doc = nlp.make_doc("Peter Blackburn met the European Commission in Brussels on Thursday to talk about lamb .")
    windows = tagger.classifier.encode([doc])
    assert len(windows.input_ids) > 1
    assert all(len(ids) <= 12 for ids in windows.input_ids)
    assert sorted(windows.token.tolist()) == list(range(len(doc)))  # every token scored once
    scores, = tagger.predict([doc])
    assert scores.shape == (len(doc), 3) and numpy.allclose(scores.sum(1), 1.0, atol=1e-5)


def test_lora_trains_adapter_and_head_only_and_full_finetuning_trains_all(tiny_bloom, tiny_llama):
    for model, lora in ((tiny_bloom, {"r": 8}), (tiny_llama, None)):
        nlp = tagger_nlp(model, lora=lora, gradient_checkpointing=True)
        reference = read_example(nlp)
        nlp.initialize(lambda: [reference])
        torch_model = nlp.get_pipe("llm_unmasked_tagger").classifier.model
        before = {name: p.detach().clone() for name, p in torch_model.named_parameters()}
        nlp.update([reference], sgd=Adam(0.01))
        changed = {name for name, p in torch_model.named_parameters() if not torch.equal(before[name], p)}
        if lora is None:
            assert any("layers.0.self_attn.q_proj" in name for name in changed)
        else:
            assert changed and all("lora_" in name or "modules_to_save" in name for name in changed)
            assert any("query_key_value.lora_B" in name for name in changed)  # BLOOM's fused projection


def read_example(nlp):
    reference = nlp.make_doc("Peter Blackburn visited Berlin .")
    reference.ents = [spacy.tokens.Span(reference, 0, 2, "PER"), spacy.tokens.Span(reference, 3, 4, "LOC")]
    return Example(nlp.make_doc(reference.text), reference)


def test_torch_optimizer_mirrors_spacys_settings():
    weight = torch.nn.Parameter(torch.ones(3))
    sgd = Adam(learn_rate=iter([0.1, 0.05]), beta1=0.9, beta2=0.95, eps=1e-5, L2=0.1, grad_clip=1.0,
               L2_is_weight_decay=True)
    optimizer = torch_optimizer(sgd, [weight])
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"]) == ((0.9, 0.95), 1e-5, 0.1)
    weight.grad = torch.full((3,), 10.0)
    step(optimizer, sgd, [weight])
    assert weight.grad is None and group["lr"] == 0.1
    sgd.step_schedules()
    weight.grad = torch.ones(3)
    step(optimizer, sgd, [weight])
    assert group["lr"] == 0.05
    with pytest.raises(ValueError, match="needs the model on a CUDA GPU"):
        torch_optimizer(sgd, [weight], "paged_adamw_8bit")


def test_cosine_schedule():
    schedule = registry.resolve({"s": {"@schedules": "spacy_seqgpt.cosine.v1", "initial_rate": 2e-4,
                                       "total_steps": 10, "warmup_steps": 2}})["s"]
    rates = [next(schedule) for _ in range(13)]
    assert rates[:3] == pytest.approx([0.0, 1e-4, 2e-4])
    assert rates[6] == pytest.approx(1e-4)  # half way through the decay
    assert rates[10:] == pytest.approx([0.0, 0.0, 0.0])
    assert all(a >= b for a, b in zip(rates[2:], rates[3:]))


@pytest.mark.parametrize("name", ["tagger_llama2_7b.cfg", "tagger_mistral_7b.cfg"])
def test_gpu_configs_hold_the_papers_settings_and_refuse_a_cpu(name):
    config = load_config(CONFIGS / name, interpolate=True)
    component = config["components"]["llm_unmasked_tagger"]
    assert (component["model"]["quantize"], component["model"]["dtype"], component["torch_optimizer"],
            dict(component["lora"])) == (
        "4bit", "bfloat16", "paged_adamw_8bit", {"r": 64, "alpha": 16, "dropout": 0.1, "target_modules": None})
    training = config["training"]
    assert (training["accumulate_gradient"], training["batcher"]["size"], training["max_epochs"]) == (4, 64, 5)
    optimizer = registry.resolve({"o": training["optimizer"]}, validate=False)["o"]
    assert (optimizer.learn_rate, optimizer.b1, optimizer.b2, optimizer.eps, optimizer.L2, optimizer.grad_clip) == (
        2e-4, 0.9, 0.95, 1e-5, 0.1, 1.0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            spacy.util.load_model_from_config(config, auto_fill=True)


def test_bad_settings_and_inputs_get_clear_errors(tiny_llama):
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        tagger_nlp(tiny_llama, quantize="4bit")
    with pytest.raises(ValueError, match="'quantize' must be null, \"8bit\", \"4bit\" .* or \"int8\""):
        tagger_nlp(tiny_llama, quantize="3bit")
    with pytest.raises(ValueError, match="trains through LoRA"):
        tagger_nlp(tiny_llama, quantize="4bit", lora=None)
    with pytest.raises(ValueError, match="unknown LoRA settings"):
        tagger_nlp(tiny_llama, lora={"rank": 8})
    with pytest.raises(ValueError, match="torch_optimizer"):
        tagger_nlp(tiny_llama, torch_optimizer="sgd")
    with pytest.raises(ValueError, match="code of 0s and 1s"):
        tagger_nlp(tiny_llama, unmask="012")
    with pytest.raises(ValueError, match="trains its own LoRA adapter"):
        tagger_nlp(tiny_llama, adapter="some/adapter")
    nlp = tagger_nlp(tiny_llama, unmask="01101")
    with pytest.raises(ValueError, match="at most 4 digits"):
        nlp.get_pipe("llm_unmasked_tagger").initialize(labels=["PER"])
    nlp = tagger_nlp(tiny_llama)
    with pytest.raises(ValueError, match="not initialized"):
        nlp("Peter went home")
    tagger = nlp.get_pipe("llm_unmasked_tagger")
    with pytest.raises(ValueError, match="no labels"):
        tagger.initialize(lambda: [Example(nlp.make_doc("no entities"), nlp.make_doc("no entities"))])
    with pytest.raises(ValueError, match="without spaces"):
        tagger.initialize(labels=["PER", "two words"])
    tagger.initialize(labels=["PER"])
    with pytest.raises(ValueError, match="'LOC', which is not one of the component's labels"):
        nlp.update([read_example(nlp)], sgd=Adam(0.001))
    with pytest.raises(ValueError, match="cannot add the label"):
        tagger.add_label("LOC")


@pytest.mark.slow  # trains a tagger until it fits
def test_unmask_sweep_trains_every_code_and_names_the_best(tmp_path, tiny_llama, conll_sample):
    train_file = str(conll_sample[0])
    overrides = {"paths.model": tiny_llama, "paths.train": train_file, "paths.dev": train_file,
                 "paths.train_limit": 8, "paths.dev_limit": 8, "training.max_steps": 3, "training.eval_frequency": 3}
    rows = run_sweep(CONFIGS / "tagger_tiny.cfg", tmp_path, groups=2, overrides=overrides)
    assert [row["code"] for row in rows] == ["00", "01", "10", "11"]
    best = max(rows, key=lambda row: row["score"])["code"]
    table = (tmp_path / "results.md").read_text()
    assert f"`{best}` (best)" in table and table.count("\n") == 6
    assert (tmp_path / "results.png").stat().st_size > 1000
    for row in rows:
        meta = srsly.read_json(tmp_path / row["code"] / "model-best" / "meta.json")
        assert row["score"] == meta["performance"]["ents_f"]
        assert load_config(tmp_path / row["code"] / "model-best" / "config.cfg")[
            "components"]["llm_unmasked_tagger"]["model"]["unmask"] == row["code"]
    # A rerun finds every result and trains nothing.
    (tmp_path / "00" / "model-best" / "meta.json").unlink()
    assert run_sweep(CONFIGS / "tagger_tiny.cfg", tmp_path, groups=2, overrides=overrides) == rows
