"""spaCy's habits that cross process boundaries: pickling a pipeline, and nlp.pipe(n_process=2)
on Linux's default start method (fork) and on spawn."""
import json
import pickle
import subprocess
import sys

import pytest
import spacy

from conftest import CAT_LABELS, EXAMPLES, NER_LABELS

pytestmark = pytest.mark.slow  # pipelines pickled for other processes, and nlp.pipe with two

TEXTS = [text for _, text, _, _ in EXAMPLES] * 2


def annotations(docs):
    return [([(e.start_char, e.end_char, e.label_) for e in doc.ents], doc.cats) for doc in docs]


def build(model):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"labels": NER_LABELS, "model": model})
    nlp.add_pipe("seqgpt_textcat", config={"labels": CAT_LABELS, "model": model, "probabilities": True})
    return nlp


def in_a_new_process(tmp_path, data: bytes, texts=TEXTS):
    """Annotations by the pickled pipeline ``data``, unpickled in a fresh interpreter."""
    (tmp_path / "nlp.pickle").write_bytes(data)
    script = ("import json, pickle, sys; nlp = pickle.load(open(sys.argv[1], 'rb'));"
              "print(json.dumps([([(e.start_char, e.end_char, e.label_) for e in d.ents], d.cats) "
              "for d in nlp.pipe(json.loads(sys.argv[2]))]))")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "nlp.pickle"), json.dumps(texts)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [(([tuple(e) for e in ents]), cats) for ents, cats in json.loads(result.stdout.splitlines()[-1])]


def test_a_pipeline_pickles_and_annotates_the_same(seqgpt_tiny, tmp_path):
    nlp = build(seqgpt_tiny)
    expected = annotations(nlp.pipe(TEXTS))
    restored = pickle.loads(pickle.dumps(nlp))
    assert annotations(restored.pipe(TEXTS)) == expected
    assert [(name, pipe.name) for name, pipe in restored.pipeline] == [(name, name) for name in nlp.pipe_names]
    assert in_a_new_process(tmp_path, pickle.dumps(nlp)) == expected  # the model loads there, from its name


def test_a_loaded_pipeline_pickles_without_its_weights_and_reads_them_from_its_folder(seqgpt_tiny, tmp_path):
    nlp = build(seqgpt_tiny)
    expected = annotations(nlp.pipe(TEXTS))
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(
        tmp_path / "pipeline",
        config={
            "components": {  # proves the source model is not read
                "seqgpt_ner": {"model": "no-such-org/no-such-model"},
                "seqgpt_textcat": {"model": "no-such-org/no-such-model"},
            }
        },
    )
    data = pickle.dumps(loaded)
    weights = (tmp_path / "pipeline" / "seqgpt_ner" / "model" / "model.safetensors").stat().st_size
    assert len(data) < weights / 4  # settings and a folder name, not the weights
    assert in_a_new_process(tmp_path, data) == expected


def test_a_pipeline_read_from_bytes_carries_its_weights_when_pickled(seqgpt_tiny, tmp_path):
    nlp = build(seqgpt_tiny)
    expected = annotations(nlp.pipe(TEXTS))
    from_bytes = build("no-such-org/no-such-model").from_bytes(nlp.to_bytes())
    assert in_a_new_process(tmp_path, pickle.dumps(from_bytes)) == expected


def test_a_trained_tagger_pickles_with_its_weights(tiny_llama):
    nlp = spacy.blank("en")
    tagger = nlp.add_pipe("llm_unmasked_tagger", config={"model": {"name": tiny_llama, "device": "cpu"}})
    tagger.initialize(labels=["PER", "LOC"])
    docs = list(nlp.pipe(TEXTS[:3]))
    restored = pickle.loads(pickle.dumps(nlp))
    again = list(restored.pipe(TEXTS[:3]))
    assert [[e._.seqgpt_score for e in d.ents] for d in again] == [[e._.seqgpt_score for e in d.ents] for d in docs]


SCRIPT = '''
import json, multiprocessing, sys
import spacy
from spacy.language import Language


@Language.component("torch_threads")
def torch_threads(doc):
    import torch
    doc.user_data["threads"] = torch.get_num_threads()
    return doc


def annotations(docs):
    return [([(e.start_char, e.end_char, e.label_) for e in d.ents], d.cats, sorted(d._.rel.items()),
             d.user_data["threads"]) for d in docs]


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1], force=True)
    texts = json.loads(sys.argv[3])
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"labels": ["person", "organization", "location"], "model": sys.argv[2]})
    nlp.add_pipe("seqgpt_textcat", config={"labels": ["sports", "politics", "business"], "model": sys.argv[2]})
    nlp.add_pipe("seqgpt_rel", config={"labels": ["works for"], "model": sys.argv[2], "threshold": 0.0})
    nlp.add_pipe("torch_threads")
    one = annotations(nlp.pipe(texts))
    two = annotations(nlp.pipe(texts, n_process=2, batch_size=2))
    tuples = [(a, i) for a, i in zip(annotations(d for d, _ in nlp.pipe(
        [(t, i) for i, t in enumerate(texts)], as_tuples=True, n_process=2, batch_size=3)), range(len(texts)))]
    print(json.dumps({"one": one, "two": two, "tuples": tuples}))
'''


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pipe_with_two_processes_gives_the_same_docs_as_one(seqgpt_tiny, tmp_path, method):
    (tmp_path / "run.py").write_text(SCRIPT)
    result = subprocess.run([sys.executable, str(tmp_path / "run.py"), method, seqgpt_tiny, json.dumps(TEXTS)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    strip = [(ents, cats, rel) for ents, cats, rel, _ in out["one"]]
    assert [(ents, cats, rel) for ents, cats, rel, _ in out["two"]] == strip  # doc._.rel crosses too
    assert [(ents, cats, rel) for (ents, cats, rel, _), _ in out["tuples"]] == strip
    assert {threads for *_, threads in out["two"]} == {1}  # two workers share the cores
    assert any(ents for ents, _, _ in strip) and any(rel for _, _, rel in strip)
