"""``seqgpt annotate``: shards, manifest, rejects, resuming after SIGKILL, and the Ray engine."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import spacy
import srsly
from spacy.tokens import DocBin

from spacy_seqgpt.annotation.job import annotate, pipeline_config, pipeline_summary
from spacy_seqgpt.annotation.shards import INPUT_ATTR

from conftest import EXAMPLES, NER_LABELS

# The taught English texts, over and over: the tiny model finds their entities
TEXTS = [text for lang, text, _, _ in EXAMPLES if lang == "en"] * 8


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, seqgpt_tiny):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"labels": NER_LABELS, "model": seqgpt_tiny, "max_new_tokens": 40})
    folder = tmp_path_factory.mktemp("annotate") / "pipeline"
    nlp.to_disk(folder)
    return str(folder)


def write_inputs(folder, texts=TEXTS):
    """The texts across a .jsonl (with one blank text and one bad line), a .txt and a .spacy file."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps({"id": i, "text": text}) for i, text in enumerate(texts[:10])]
    rows[3] = json.dumps({"id": 3, "text": "  "})
    rows.append("{not json")
    (folder / "a.jsonl").write_text("\n".join(rows) + "\n", encoding="utf8")
    (folder / "b.txt").write_text("\n".join(texts[10:30]) + "\n", encoding="utf8")
    nlp = spacy.blank("en")
    DocBin(docs=[nlp.make_doc(text) for text in texts[30:]]).to_disk(folder / "c.spacy")
    return folder


def output_docs(folder):
    """Every annotated Doc of a finished job, shard by shard, and every reject."""
    manifest = json.loads((folder / "manifest.json").read_text())
    vocab = spacy.blank("en").vocab
    docs, rejects = [], []
    for number in sorted(int(key) for key in manifest["shards"]):
        docs += list(DocBin().from_disk(folder / f"shard-{number:06d}.spacy").get_docs(vocab))
        rejects += list(srsly.read_jsonl(folder / f"shard-{number:06d}.rejects.jsonl"))
    return manifest, docs, rejects


def summary(docs):
    return [(doc.user_data[INPUT_ATTR]["index"], doc.text, [(e.start_char, e.end_char, e.label_) for e in doc.ents])
            for doc in docs]


def check_exactly_once(folder, n):
    manifest, docs, rejects = output_docs(folder)
    indices = sorted([doc.user_data[INPUT_ATTR]["index"] for doc in docs] + [r["index"] for r in rejects])
    assert indices == list(range(n))  # every input document once, annotated or rejected
    assert [d.user_data[INPUT_ATTR]["index"] for d in docs] == sorted(d.user_data[INPUT_ATTR]["index"] for d in docs)
    return manifest, docs, rejects


def test_shards_manifest_rejects_and_json_lines(pipeline, tmp_path):
    inputs = write_inputs(tmp_path / "in")
    manifest = annotate(pipeline, str(inputs), tmp_path / "out", shard_size=7, as_json=True, progress=False)
    assert manifest["documents"] == 41 and manifest["counts"] == {"shards": 6, "docs": 39, "rejected": 2}
    _, docs, rejects = check_exactly_once(tmp_path / "out", 41)
    assert {(r["source"].rsplit("/", 1)[-1], r["reason"].split(" (")[0]) for r in rejects} == {
        ("a.jsonl:4", "empty text"), ("a.jsonl:11", "not JSON")}
    assert docs[0].user_data[INPUT_ATTR] == {"index": 0, "source": str(inputs / "a.jsonl") + ":1", "fields": {"id": 0}}
    assert [d.text for d in docs] == [t for i, t in enumerate(TEXTS[:10]) if i != 3] + TEXTS[10:]
    rows = [row for n in range(6) for row in srsly.read_jsonl(tmp_path / "out" / f"shard-{n:06d}.jsonl")]
    assert [(r["index"], r["ents"]) for r in rows] == [
        (d.user_data[INPUT_ATTR]["index"], [{"start": e.start_char, "end": e.end_char, "label": e.label_, "text": e.text}
                                             for e in d.ents]) for d in docs]
    assert any(doc.ents for doc in docs)  # the taught model finds entities
    again = annotate(pipeline, str(inputs), tmp_path / "out", shard_size=7, batch_size=3, progress=False)
    assert again["shards"] == manifest["shards"]  # all done: nothing redone
    assert [(run["engine"], run["batch_size"]) for run in again["runs"]] == [("local", 32), ("local", 3)]
    with pytest.raises(ValueError, match="another job's shards \\(shard_size"):
        annotate(pipeline, str(inputs), tmp_path / "out", shard_size=5, progress=False)


def test_limit_and_worker_processes_give_the_same_documents(pipeline, tmp_path):
    inputs = write_inputs(tmp_path / "in")
    annotate(pipeline, str(inputs / "b.txt"), tmp_path / "one", shard_size=4, limit=9, progress=False)
    annotate(pipeline, str(inputs / "b.txt"), tmp_path / "two", shard_size=4, limit=9, n_process=2, progress=False)
    one, two = output_docs(tmp_path / "one")[1], output_docs(tmp_path / "two")[1]
    assert len(one) == 9 and summary(one) == summary(two)


def test_bad_inputs_are_named(pipeline, tmp_path):
    with pytest.raises(ValueError, match="no inputs at"):
        annotate(pipeline, str(tmp_path / "missing*.jsonl"), tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="unknown engine"):
        annotate(pipeline, str(write_inputs(tmp_path / "in")), tmp_path / "out", engine="spark", progress=False)


def run_killed_then_resumed(command, output, n, shards):
    """Run ``command``, SIGKILL it (and its children) once a shard is done, rerun it; the
    output must hold every document once."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    manifest = output / "manifest.json"

    def done():  # the manifest is written atomically: always whole
        return len(json.loads(manifest.read_text())["shards"]) if manifest.exists() else 0

    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and not done():
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = done()
    assert 0 < done < shards, "the kill should land mid-run"
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return check_exactly_once(output, n)


def test_a_run_killed_by_sigkill_resumes_with_every_document_once(pipeline, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(TEXTS * 3) + "\n", encoding="utf8")
    command = [sys.executable, "-m", "spacy", "seqgpt", "annotate", pipeline, str(tmp_path / "in.txt"),
               str(tmp_path / "out"), "--shard-size", "2"]
    manifest, docs, _ = run_killed_then_resumed(command, tmp_path / "out", len(TEXTS) * 3, len(TEXTS) * 3 // 2)
    assert manifest["counts"] == {"shards": len(TEXTS) * 3 // 2, "docs": len(TEXTS) * 3, "rejected": 0}
    assert [d.text for d in docs] == TEXTS * 3


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the Ray engine needs pip install 'spacy-seqgpt[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_the_manifest_s_pipeline_summary_from_the_config_file_is_the_loaded_pipeline_s(pipeline, tmp_path):
    """The Ray driver reads a folder's config.cfg instead of loading the weights."""
    summary = pipeline_summary(pipeline_config(pipeline))
    assert summary == pipeline_summary(spacy.load(pipeline).config)
    assert summary["seqgpt_ner"]["factory"] == "seqgpt_ner" and summary["seqgpt_ner"]["labels"] == NER_LABELS
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("entity_ruler")
    nlp.disable_pipe("entity_ruler")  # not run, so not in the manifest
    nlp.to_disk(tmp_path / "two")
    assert pipeline_summary(pipeline_config(str(tmp_path / "two"))) == {"sentencizer": {"factory": "sentencizer"}}


def test_the_ray_engine_writes_what_one_process_writes(pipeline, tmp_path, local_ray):
    inputs = write_inputs(tmp_path / "in")
    annotate(pipeline, str(inputs), tmp_path / "local", shard_size=6, progress=False)
    manifest = annotate(pipeline, str(inputs), tmp_path / "ray", shard_size=6, engine="ray", replicas=2,
                        progress=False)
    assert manifest["counts"] == {"shards": 7, "docs": 39, "rejected": 2}
    assert manifest["components"] == srsly.read_json(tmp_path / "local" / "manifest.json")["components"]
    local, ray_docs = output_docs(tmp_path / "local"), output_docs(tmp_path / "ray")
    assert summary(ray_docs[1]) == summary(local[1]) and ray_docs[2] == local[2]


def test_a_ray_run_killed_by_sigkill_resumes_with_every_document_once(pipeline, tmp_path):
    pytest.importorskip("ray", reason="the Ray engine needs pip install 'spacy-seqgpt[ray]'")
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf8")
    command = [sys.executable, "-m", "spacy", "seqgpt", "annotate", pipeline, str(tmp_path / "in.txt"),
               str(tmp_path / "out"), "--shard-size", "4", "--engine", "ray", "--replicas", "2"]
    _, docs, _ = run_killed_then_resumed(command, tmp_path / "out", len(TEXTS), len(TEXTS) // 4)
    assert [d.text for d in docs] == TEXTS
