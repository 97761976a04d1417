"""`spacy project run all` end to end (few steps), and the package it builds: pip-installable,
loadable with spacy.load from where it was installed, annotating text with every SeqGPT
component (entities, their types, relations, ...) on one shared model."""
import pytest
import json
import os
import shutil
import subprocess
import sys

from thinc.api import Config

from conftest import ROOT

pytestmark = pytest.mark.slow  # the whole workflow, and its package installed



def run(command, cwd, **kwargs):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_project_all_builds_an_installable_pipeline(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("project.yml", "configs", "assets"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, project / name)
    # the README's main command on a fresh clone (no ../shared: the shipped samples), at a small
    # scale: a preset's scale is its config's, so the copy's tiny preset gets fewer steps
    preset = project / "configs" / "training" / "seqgpt_tiny.cfg"
    config = Config().from_disk(preset, interpolate=False)
    config["pt"]["steps"] = config["ft"]["steps"] = 4
    config["corpus"]["eval_limit"] = 3
    config.to_disk(preset)
    run([sys.executable, "-m", "spacy", "project", "run", "all", ".", "--vars.max_new_tokens", "16"], cwd=project)
    metrics = (project / "metrics" / "metrics.md").read_text()
    assert "| wnut17 | extract | held-in |" in metrics and "| banking77 | classify | held-in |" in metrics
    assert "| crossner-politics | extract | held-out |" in metrics and "\n| held-out | 2 |" in metrics
    assert (project / "metrics" / "scores.png").stat().st_size > 0
    assert [line for line in (project / "training" / "ft" / "log.jsonl").read_text().splitlines() if line]
    pipeline = project / "training" / "pipeline"
    assert (pipeline / "seqgpt_ner" / "model" / "model.safetensors").exists()
    assert not (pipeline / "seqgpt_textcat" / "model").exists()  # one copy of the shared model
    tarball = next((project / "packages").rglob("*.tar.gz"))
    target = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(target), str(tarball)], cwd=tmp_path)
    # every SeqGPT component, on one shared model: entities, their types, relations between them
    script = (
        "import json, spacy; nlp = spacy.load('en_seqgpt_tiny'); doc = nlp.make_doc('Anna flew to Paris.');"
        "doc.ents = [doc.char_span(0, 4, 'person'), doc.char_span(13, 18, 'location')]; doc = nlp(doc);"
        "pipes = {name: nlp.get_pipe(name) for name in nlp.pipe_names if name.startswith('seqgpt_')};"
        "assert len({id(pipe.shared) for pipe in pipes.values()}) == 1;"
        "assert set(doc.cats) == set(pipes['seqgpt_textcat'].labels);"
        "ents = {(e.start, e.end) for e in doc.ents};"
        "assert all((s.start, s.end) in ents for s in doc.spans['types']);"
        "assert all(isinstance(v, dict) for v in doc._.rel.values());"
        "print(json.dumps([sorted(pipes), *(pipes[n].labels for n in ('seqgpt_ner', 'seqgpt_textcat',"
        " 'seqgpt_rel', 'seqgpt_typing')), str(spacy.util.get_package_path('en_seqgpt_tiny'))]))"
    )
    result = run([sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)})
    names, ner_labels, cat_labels, rel_labels, type_labels, package_path = json.loads(result.stdout.splitlines()[-1])
    assert str(target) in package_path
    assert names == sorted(["seqgpt_ner", "seqgpt_typing", "seqgpt_rel", "seqgpt_textcat", "seqgpt_events",
                            "seqgpt_questions"])
    # the labels the model was trained on (the English training records' answers), not the config's examples;
    # no relation records in the samples: seqgpt_rel keeps the config's labels
    trained = [json.loads(line) for path in (project / "corpus" / "train").glob("*.jsonl")
               for line in path.read_text().splitlines()]
    entity_labels = {label for r in trained if r["task"] == "extract" and r["lang"] == "en"
                     for label, spans in r["answer"].items() if spans}
    assert set(ner_labels) == set(type_labels) == entity_labels
    assert rel_labels == ["works for", "based in", "located in"]
    assert "person" in ner_labels and "card arrival" in cat_labels and "sports" not in cat_labels

