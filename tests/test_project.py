"""`spacy project run all` end to end (few steps), and the package it builds: pip-installable,
loadable with spacy.load, annotating text with both components on one shared model."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


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
    # the shipped samples, so the workflow is shown to run without ../shared
    run([sys.executable, "-m", "spacy", "project", "run", "all", ".", "--vars.data_dir", "assets/datasets",
         "--vars.pt_steps", "4", "--vars.ft_steps", "4", "--vars.eval_limit", "3", "--vars.max_new_tokens", "16"],
        cwd=project)
    metrics = (project / "metrics" / "metrics.md").read_text()
    assert "| wnut17 | extract | held-in |" in metrics and "| banking77 | classify | held-in |" in metrics
    assert (project / "metrics" / "scores.png").stat().st_size > 0
    assert [line for line in (project / "training" / "ft" / "log.jsonl").read_text().splitlines() if line]
    pipeline = project / "training" / "pipeline"
    assert (pipeline / "seqgpt_ner" / "model" / "model.safetensors").exists()
    assert not (pipeline / "seqgpt_textcat" / "model").exists()  # one copy of the shared model
    tarball = next((project / "packages").rglob("*.tar.gz"))
    target = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(target), str(tarball)], cwd=tmp_path)
    script = ("import spacy; nlp = spacy.load('en_seqgpt_tiny'); doc = nlp('Anna flew to Paris.');"
              "ner, cat = nlp.get_pipe('seqgpt_ner'), nlp.get_pipe('seqgpt_textcat');"
              "assert ner.shared is cat.shared; assert set(doc.cats) == {'sports', 'politics', 'business', 'technology'};"
              "print(nlp.pipe_names, spacy.util.get_package_path('en_seqgpt_tiny'))")
    result = run([sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)})
    assert "seqgpt_ner" in result.stdout and str(target) in result.stdout

