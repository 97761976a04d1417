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

from spacy_seqgpt import atomic
from spacy_seqgpt.annotation.job import annotate, pipeline_config, pipeline_summary
from spacy_seqgpt.annotation.shards import INPUT_ATTR, ShardFailed

from conftest import EXAMPLES, NER_LABELS

pytestmark = pytest.mark.slow  # whole annotation runs, killed and resumed, on one machine and on Ray

# The taught English texts, over and over: the tiny model finds their entities
TEXTS = [text for lang, text, _, _ in EXAMPLES if lang == "en"] * 8


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, seqgpt_tiny):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"labels": NER_LABELS, "model": seqgpt_tiny, "decoding": {"max_new_tokens": 40}})
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
        (
            d.user_data[INPUT_ATTR]["index"],
            [{"start": e.start_char, "end": e.end_char, "label": e.label_, "text": e.text} for e in d.ents],
        )
        for d in docs
    ]
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
    summary = pipeline_summary(pipeline_config(pipeline, {}))
    assert summary == pipeline_summary(spacy.load(pipeline).config)
    assert summary["seqgpt_ner"]["factory"] == "seqgpt_ner" and summary["seqgpt_ner"]["labels"] == NER_LABELS
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("entity_ruler")
    nlp.disable_pipe("entity_ruler")  # not run, so not in the manifest
    nlp.to_disk(tmp_path / "two")
    assert pipeline_summary(pipeline_config(str(tmp_path / "two"), {})) == {"sentencizer": {"factory": "sentencizer"}}


def test_the_decoding_block_can_be_set_for_a_job_and_a_resume_must_keep_it(pipeline, tmp_path):
    """``--components.seqgpt_ner.decoding.max_new_tokens 2``: the pipeline loads with it, the
    manifest records it, and a rerun with another decoding is another job."""
    from typer.testing import CliRunner

    from spacy_seqgpt.cli import seqgpt_cli

    inputs = write_inputs(tmp_path / "in", TEXTS[:6])
    short = {"components.seqgpt_ner.decoding.max_new_tokens": 2}
    manifest = annotate(pipeline, str(inputs), tmp_path / "out", overrides=short, progress=False)
    assert manifest["components"]["seqgpt_ner"]["decoding"]["max_new_tokens"] == 2
    assert summary(output_docs(tmp_path / "out")[1]) != summary(output_docs_of(pipeline, inputs, tmp_path / "full"))
    result = CliRunner().invoke(seqgpt_cli, ["annotate", pipeline, str(inputs), str(tmp_path / "out"),
                                             "--components.seqgpt_ner.decoding.max_new_tokens", "3"])
    assert result.exit_code == 1 and "another job's shards (components differ)" in " ".join(result.output.split())


def output_docs_of(pipeline, inputs, folder):
    annotate(pipeline, str(inputs), folder, progress=False)
    return output_docs(folder)[1]


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


# A pipeline whose one component fails as the test says: for every document (a machine error
# such as running out of memory), for documents holding "bad" (a document error), or in the
# worker processes of nlp.pipe(n_process=...) only (a broken worker path).
FAILURE = {"error": None, "in_workers": False}


@spacy.Language.component("test_annotate_failure")
def _failure(doc):
    import multiprocessing

    error = FAILURE["error"]
    if error is not None and (not isinstance(error, ValueError) or "bad" in doc.text):
        raise error
    if FAILURE["in_workers"] and multiprocessing.parent_process() is not None:
        raise TypeError("unhashable type: 'list'")
    return doc


@pytest.fixture
def failing_pipeline(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("test_annotate_failure")
    nlp.to_disk(tmp_path / "failing")
    yield str(tmp_path / "failing")
    FAILURE.update(error=None, in_workers=False)


def lines(folder, texts):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in.txt").write_text("".join(text + "\n" for text in texts), encoding="utf8")
    return str(folder / "in.txt")


@pytest.mark.parametrize("error", [RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError(),
                                   KeyError("the same for every document")])
def test_an_error_of_the_whole_shard_fails_it_and_a_rerun_retries_it(failing_pipeline, tmp_path, error):
    inputs = lines(tmp_path / "in", [f"text {i}" for i in range(6)])
    FAILURE["error"] = error
    with pytest.raises(ShardFailed, match="shard 0 failed as a whole.*not marked done"):
        annotate(failing_pipeline, inputs, tmp_path / "out", shard_size=3, progress=False)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["shards"] == {}
    assert not list((tmp_path / "out").glob("shard-*"))
    FAILURE["error"] = None  # the cause is gone: everything is annotated
    manifest = annotate(failing_pipeline, inputs, tmp_path / "out", shard_size=3, progress=False)
    assert manifest["counts"] == {"shards": 2, "docs": 6, "rejected": 0}


def test_a_document_error_rejects_only_that_document(failing_pipeline, tmp_path, capsys):
    inputs = lines(tmp_path / "in", ["good one", "bad one", "good two"])
    FAILURE["error"] = ValueError("cannot read this one")
    manifest = annotate(failing_pipeline, inputs, tmp_path / "out", shard_size=3, progress=False)
    assert manifest["counts"] == {"shards": 1, "docs": 2, "rejected": 1}
    assert manifest["shards"]["0"]["retried_alone"]["failed_alone"] == 1
    assert "1 document(s) failed alone and are rejected" in " ".join(capsys.readouterr().out.split())
    _, _, rejects = check_exactly_once(tmp_path / "out", 3)
    assert rejects[0]["index"] == 1 and "cannot read this one" in rejects[0]["reason"]


def test_a_broken_worker_path_is_said_loudly_and_the_run_goes_on_in_one_process(failing_pipeline, tmp_path, capsys):
    inputs = lines(tmp_path / "in", [f"text {i}" for i in range(6)])
    FAILURE["in_workers"] = True
    manifest = annotate(failing_pipeline, inputs, tmp_path / "out", shard_size=3, n_process=2, progress=False)
    assert manifest["counts"] == {"shards": 2, "docs": 6, "rejected": 0}
    first, second = manifest["shards"]["0"], manifest["shards"]["1"]
    assert first["retried_alone"]["failed_alone"] == 0 and "n_process=2" in first["retried_alone"]["error"]
    assert "retried_alone" not in second  # the rest of the run in this process, not retried again
    printed = " ".join(capsys.readouterr().out.split())
    assert "Shard 0 was annotated one document at a time" in printed and "unhashable type" in printed
    assert "the fault is in the worker processes" in printed and "--n-process 1" in printed


def test_records_a_shard_cannot_write_are_rejects_and_the_run_goes_on(failing_pipeline, tmp_path):
    rows = [json.dumps({"text": "fine", "note": "bad \udcff"}), json.dumps({"text": "half \ud800 a pair"}),
            "[" * 100_000 + "]" * 100_000, json.dumps({"text": "fine too", "note": "good"})]
    (tmp_path / "in.jsonl").write_text("\n".join(rows) + "\n", encoding="utf8")
    for _ in range(2):  # the rerun finds the run done
        manifest = annotate(failing_pipeline, str(tmp_path / "in.jsonl"), tmp_path / "out", as_json=True,
                            progress=False)
        assert manifest["counts"] == {"shards": 1, "docs": 1, "rejected": 3}
    _, docs, rejects = check_exactly_once(tmp_path / "out", 4)
    assert [doc.text for doc in docs] == ["fine too"]
    assert [r["reason"].split(",")[0] for r in rejects] == [
        "holds a lone surrogate (U+DCFF in the field 'note')", "holds a lone surrogate (U+D800 in the field 'text')",
        "JSON nested too deeply to read"]


def test_a_folder_another_run_is_writing_is_refused(failing_pipeline, tmp_path):
    import fcntl

    inputs = lines(tmp_path / "in", ["one", "two"])
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / ".lock", "a+") as held:
        held.write("pid 4242")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="being written by another annotate run \\(pid 4242\\)"):
            annotate(failing_pipeline, inputs, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert annotate(failing_pipeline, inputs, tmp_path / "out", progress=False)["counts"]["docs"] == 2


@pytest.mark.parametrize("plant", ["link", "dangling link", "other file", "hard link"])
def test_a_lock_file_planted_in_a_shared_output_folder_is_never_written_through(failing_pipeline, tmp_path, plant):
    inputs = lines(tmp_path / "in", ["one", "two"])
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    if plant == "link":
        (out / ".lock").symlink_to(target)
    elif plant == "dangling link":
        (out / ".lock").symlink_to(tmp_path / "created-by-the-run")
    elif plant == "hard link":
        os.link(target, out / ".lock")
    else:
        (out / ".lock").write_text("keep me")
    if "link" in plant and plant != "hard link":
        with pytest.raises(ValueError, match="cannot be opened as a lock file"):
            annotate(failing_pipeline, inputs, out, progress=False)
    else:  # a file that is not ours: locked, and left as it was
        assert annotate(failing_pipeline, inputs, out, progress=False)["counts"]["docs"] == 2
        assert (out / ".lock").read_text() == "keep me"
    assert target.read_text() == "keep me" and not (tmp_path / "created-by-the-run").exists()


def test_an_input_edited_in_place_is_another_job(failing_pipeline, tmp_path):
    inputs = lines(tmp_path / "in", ["alpha one", "beta two"])
    annotate(failing_pipeline, inputs, tmp_path / "out", shard_size=1, limit=1, progress=False)
    lines(tmp_path / "in", ["gamma one", "delta two"])  # same size, same line count
    with pytest.raises(ValueError, match="another job's shards \\(inputs"):
        annotate(failing_pipeline, inputs, tmp_path / "out", shard_size=1, limit=1, progress=False)


def test_damaged_or_incomplete_done_shards_are_redone(failing_pipeline, tmp_path, capsys):
    inputs = lines(tmp_path / "in", [f"text {i}" for i in range(6)])
    out = tmp_path / "out"
    annotate(failing_pipeline, inputs, out, shard_size=2, progress=False)
    shard = out / "shard-000001.spacy"
    shard.write_bytes(shard.read_bytes()[:10])  # truncated
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["shards"]["2"]["docs"]  # an entry missing a key
    (out / "manifest.json").write_text(json.dumps(manifest))
    again = annotate(failing_pipeline, inputs, out, shard_size=2, progress=False)
    assert again["counts"] == {"shards": 3, "docs": 6, "rejected": 0}
    assert [d.text for d in check_exactly_once(out, 6)[1]] == [f"text {i}" for i in range(6)]
    printed = " ".join(capsys.readouterr().out.split())  # wasabi wraps lines
    assert "shard 1: shard-000001.spacy is missing or not the file written" in printed
    assert "shard 2: its manifest entry is incomplete" in printed


def test_jsonl_asked_for_on_a_resume_is_written_for_the_done_shards(failing_pipeline, tmp_path):
    inputs = lines(tmp_path / "in", ["one", "two", "three"])
    annotate(failing_pipeline, inputs, tmp_path / "out", shard_size=2, limit=2, progress=False)
    assert not (tmp_path / "out" / "shard-000000.jsonl").exists()
    manifest = annotate(failing_pipeline, inputs, tmp_path / "out", shard_size=2, limit=2, as_json=True, progress=False)
    rows = list(srsly.read_jsonl(tmp_path / "out" / "shard-000000.jsonl"))
    assert [row["text"] for row in rows] == ["one", "two"] and ".jsonl" in manifest["shards"]["0"]["files"]


def test_a_full_disk_leaves_no_temporary_file(tmp_path, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_atomic(tmp_path / "manifest.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_a_ray_replica_that_cannot_load_the_pipeline_ends_the_run_in_one_message(pipeline, tmp_path, local_ray):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(pipeline, broken)
    shutil.rmtree(broken / "seqgpt_ner")  # config.cfg reads, the pipeline does not load
    inputs = lines(tmp_path / "in", ["one", "two"])
    # the replica's own error, not Ray's actor timeout (no timing assertion: machines are loaded unevenly)
    with pytest.raises(ValueError, match="a Ray replica could not load the pipeline .*not saved completely"):
        annotate(str(broken), inputs, tmp_path / "out", engine="ray", progress=False)
