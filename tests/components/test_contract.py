"""One contract for every component: spaCy's ``predict`` then ``set_annotations``, one vocabulary
of settings, and the registered, versioned parts a config names."""
import inspect

import pytest
import spacy
from spacy.pipeline import Pipe
from spacy.util import registry

import spacy_seqgpt
from spacy_seqgpt.components.pipe import SeqGPTPipe

COMPONENTS = {name: getattr(spacy_seqgpt, name) for name in spacy_seqgpt.__all__
              if inspect.isclass(getattr(spacy_seqgpt, name)) and issubclass(getattr(spacy_seqgpt, name), Pipe)}
FACTORIES = ["seqgpt_ner", "seqgpt_textcat", "seqgpt_typing", "seqgpt_rel", "seqgpt_events", "seqgpt_questions",
             "llm_unmasked_tagger"]
# What each setting means, the same in every component that has it.
VOCABULARY = {
    "labels": "the label set",
    "input_key": "the doc.spans key a component reads (null: doc.ents)",
    "spans_key": "the doc.spans key a component writes (null: doc.ents, where it writes spans)",
    "threshold": "the score what a component writes must reach",
    "model": "the [components.<name>.model] block",
    "scorer": "a registered @scorers function",
}
# Names these settings had before one vocabulary: none may come back.
RETIRED = {"output_key", "event_types", "device", "dtype", "quantize", "adapter", "trust_remote_code", "unmask",
           "max_new_tokens", "num_beams", "constrained", "jump_forward", "speculate", "draft_tokens",
           "trigger_template", "type_template", "argument_template", "max_length", "max_distance", "max_pairs",
           "scoring"}

# Everything the package registers, by registry. A change here is a change of the config format:
# a new way of doing a registered thing ships as a new version next to the old one.
REGISTERED = {
    "factories": FACTORIES,
    "scorers": ["spacy_seqgpt.cats_scorer.v1", "spacy_seqgpt.events_scorer.v1", "spacy_seqgpt.rel_scorer.v1",
                "spacy_seqgpt.spans_scorer.v1", "spacy_seqgpt.typing_scorer.v1"],
    "misc": ["spacy_seqgpt.argument_template.v1", "spacy_seqgpt.event_type_template.v1",
             "spacy_seqgpt.pair_candidates.v1", "spacy_seqgpt.pair_template.v1", "spacy_seqgpt.relation_template.v1",
             "spacy_seqgpt.trigger_template.v1", "spacy_seqgpt.typing_template.v1"],
    "readers": ["spacy_seqgpt.ConllCorpus.v1"],
    "schedules": ["spacy_seqgpt.cosine.v1"],
    "seqgpt_models": ["spacy_seqgpt.HFModel.v1"],
    "seqgpt_decoding": ["spacy_seqgpt.Decoding.v1"],
}


def test_what_the_package_registers_is_this_snapshot():
    for name, expected in REGISTERED.items():
        found = sorted(key for key in getattr(registry, name).get_all() if "seqgpt" in key or key.startswith("llm_"))
        assert found == sorted(expected), name


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_every_component_predicts_then_sets_annotations_and_subclasses_no_other(name):
    cls = COMPONENTS[name]
    assert list(inspect.signature(cls.predict).parameters) == ["self", "docs"]
    assert list(inspect.signature(cls.set_annotations).parameters)[:2] == ["self", "docs"]
    assert len(inspect.signature(cls.set_annotations).parameters) == 3
    others = [other for other_name, other in COMPONENTS.items() if other_name != name]
    assert not [other.__name__ for other in others if issubclass(cls, other)]


@pytest.mark.parametrize("factory", FACTORIES)
def test_every_setting_is_in_the_one_vocabulary_or_the_components_own(factory):
    defaults = spacy.Language.get_factory_meta(factory).default_config
    assert not RETIRED & set(defaults), f"{factory} still has {RETIRED & set(defaults)}"
    if factory.startswith("seqgpt_"):  # decoding settings live in the decoding block (the tagger batches its own)
        assert "decoding" in defaults and not {"batch_size", "max_input_tokens"} & set(defaults)
    assert "scorer" in defaults and "model" in defaults
    if factory != "seqgpt_questions":  # asks free-text questions, Docs bring their own: see its module
        assert "labels" in defaults or factory == "llm_unmasked_tagger"


def test_one_config_moves_between_components_without_new_key_names(tiny_bloom):
    """The same labels, threshold, model and decoding settings configure each span component."""
    shared = {"labels": ["person", "city"], "model": tiny_bloom, "threshold": 0.5, "decoding": {"max_new_tokens": 8,
                                                                                                "batch_size": 4}}
    for factory in ("seqgpt_ner", "seqgpt_typing", "seqgpt_rel", "seqgpt_events"):
        pipe = spacy.blank("en").add_pipe(factory, config=shared)
        assert isinstance(pipe, SeqGPTPipe) and pipe.threshold == 0.5 and pipe.decoding.max_new_tokens == 8
        assert set(pipe.labels) == {"person", "city"}
    with pytest.raises(ValueError, match="'threshold' is a score between 0 and 1"):
        spacy.blank("en").add_pipe("seqgpt_rel", config={**shared, "threshold": 2})


def test_a_template_or_scorer_named_by_version_in_a_config_resolves(tiny_bloom):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_typing", config={"labels": ["city"], "model": tiny_bloom})
    text = nlp.config.to_str()
    assert '@misc = "spacy_seqgpt.typing_template.v1"' in text and '@scorers = "spacy_seqgpt.typing_scorer.v1"' in text
    rebuilt = spacy.util.load_model_from_config(spacy.util.load_config_from_str(text), auto_fill=True)
    assert rebuilt.get_pipe("seqgpt_typing").template == nlp.get_pipe("seqgpt_typing").template
    own = spacy.blank("en").add_pipe("seqgpt_typing", config={"labels": ["city"], "model": tiny_bloom,
                                                              "template": "kind of {span} in {text}"})
    assert own.template == "kind of {span} in {text}"


@pytest.mark.parametrize("factory, key, replacement", [
    ("seqgpt_events", "event_types", "write labels"), ("seqgpt_typing", "output_key", "write spans_key"),
    ("seqgpt_rel", "spans_key", "write input_key"), ("seqgpt_ner", "device", "[components.seqgpt_ner.model] device"),
    ("llm_unmasked_tagger", "unmask", "[components.llm_unmasked_tagger.model] unmask"),
    ("seqgpt_ner", "max_new_tokens", "[components.seqgpt_ner.decoding] max_new_tokens"),
    ("seqgpt_textcat", "constrained", "[components.seqgpt_textcat.decoding] constrained"),
    ("seqgpt_events", "type_template", "[components.seqgpt_events.templates] event_type"),
    ("llm_unmasked_tagger", "max_length", "write max_input_tokens"),
])
def test_a_retired_setting_is_refused_and_named_with_what_replaced_it(tiny_bloom, factory, key, replacement):
    from thinc.api import ConfigValidationError

    from spacy_seqgpt.validation import retired_settings

    config = {"model": tiny_bloom, key: "x", **({"labels": ["a"]} if factory != "llm_unmasked_tagger" else {})}
    with pytest.raises(ConfigValidationError, match=f"unexpected argument: '{key}'") as refused:
        spacy.blank("en").add_pipe(factory, config=config)
    assert [line for line in retired_settings(refused.value.errors) if replacement in line]


@pytest.mark.slow  # spaCy's command line in a subprocess
@pytest.mark.parametrize("section, line, named", [
    ("seqgpt_events", 'event_types = ["Attack"]', "seqgpt_events: 'event_types' was renamed or moved; write labels"),
    ("seqgpt_rel", "max_new_tokens = 8", "seqgpt_rel: 'max_new_tokens' was renamed or moved; write "
                                         "[components.seqgpt_rel.decoding] max_new_tokens"),
])
def test_the_seqgpt_command_line_names_what_replaced_a_retired_setting(tiny_bloom, tmp_path, section, line, named):
    import subprocess
    import sys

    from conftest import ROOT

    header = f"[components.{section}]\n"
    text = (ROOT / "configs" / "pipelines" / "seqgpt_560m.cfg").read_text().replace(header, header + line + "\n")
    (tmp_path / "config.cfg").write_text(text)
    records = '{"task": "extract", "text": "Tim met Anna.", "labels": ["person"], "answer": {"person": ["Tim"]}, ' \
              '"source": "x", "lang": "en"}\n'
    (tmp_path / "train.jsonl").write_text(records)
    result = subprocess.run([sys.executable, "-m", "spacy", "seqgpt", "assemble", str(tmp_path / "config.cfg"),
                             tiny_bloom, str(tmp_path / "train.jsonl"), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    printed = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0 and "Traceback" not in printed
    assert named in printed


def test_the_decoding_block_is_one_validated_object_a_typo_in_it_named_by_spacy(tiny_bloom):
    import dataclasses

    from thinc.api import ConfigValidationError

    from spacy_seqgpt.decoding import Decoding

    nlp = spacy.blank("en")
    ner = nlp.add_pipe("seqgpt_ner", config={"labels": ["person"], "model": tiny_bloom,
                                             "decoding": {"max_new_tokens": 7, "speculate": False}})
    assert ner.decoding == Decoding(max_new_tokens=7, speculate=False) and ner.asker().decoding is ner.decoding
    assert '@seqgpt_decoding = "spacy_seqgpt.Decoding.v1"' in nlp.config.to_str()
    rebuilt = spacy.util.load_model_from_config(spacy.util.load_config_from_str(nlp.config.to_str()), auto_fill=True)
    assert rebuilt.get_pipe("seqgpt_ner").decoding == ner.decoding
    with pytest.raises(ConfigValidationError, match="unexpected argument: 'max_new_token'"):
        spacy.blank("en").add_pipe("seqgpt_ner", config={"labels": ["a"], "model": tiny_bloom,
                                                         "decoding": {"max_new_token": 7}})
    with pytest.raises(ValueError, match="'constrained' must be true or false"):
        Decoding(constrained="yes")
    with pytest.raises(dataclasses.FrozenInstanceError):  # one block handed around is never changed on the way
        ner.decoding.max_new_tokens = 3


def test_seqgpt_api_takes_the_decoding_block_and_names_it_for_old_keywords(tiny_bloom):
    from spacy_seqgpt import SeqGPT

    assert SeqGPT(tiny_bloom, decoding={"batch_size": 2}).decoding.batch_size == 2
    with pytest.raises(TypeError, match="decoding=\\{'batch_size': ...\\}"):
        SeqGPT(tiny_bloom, batch_size=2)


@pytest.mark.parametrize("factory, key, config", [
    ("seqgpt_ner", None, {"labels": ["person"]}),
    ("seqgpt_ner", "found", {"labels": ["person"], "spans_key": "found"}),
    ("seqgpt_questions", "answers", {"questions": ["Who?"]}),
])
def test_span_writers_keep_what_is_there_unless_overwrite(tiny_bloom, factory, key, config):
    from spacy.tokens import Span

    from spacy_seqgpt.components.spans import write_spans

    for overwrite in (False, True):
        pipe = spacy.blank("en").add_pipe(factory, config={"model": tiny_bloom, "overwrite": overwrite, **config})
        doc = spacy.blank("en")("Anna met Ben in Rome")
        before = Span(doc, 0, 1, label="OLD")
        write_spans(doc, key, [(before, 0.5)], overwrite=True)
        new = [(Span(doc, 2, 3, label="person"), 0.9)]
        pipe.set_annotations([doc], [new])
        written = list(doc.ents) if key is None else list(doc.spans[key])
        assert [(s.start, s.label_) for s in written] == ([(2, "person")] if overwrite else [(0, "OLD"), (2, "person")])


def test_every_decoding_setting_given_flat_is_named_with_the_decoding_block():
    """The retired-settings table lists the decoding block's fields (it cannot import them: the
    validation module imports nothing of the package), so a field added later is named too."""
    from spacy_seqgpt.decoding.settings import SETTINGS
    from spacy_seqgpt.validation import retired_settings

    errors = [{"loc": ("seqgpt_ner", key), "msg": f"unexpected argument: '{key}'"} for key in SETTINGS]
    lines = retired_settings(errors)
    assert len(lines) == len(SETTINGS)
    assert all(f"write [components.seqgpt_ner.decoding] {key}" in line for key, line in zip(SETTINGS, lines))
