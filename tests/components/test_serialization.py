"""Saved components: bytes from anywhere write nothing outside their folder, saved pipelines read
only their own, unchanged weights, and a save cut short leaves the last good one."""
import errno
import json
import shutil

import pytest
import spacy
import srsly

from conftest import CAT_LABELS, NER_LABELS
from spacy_seqgpt.components.serialization import folder_from_bytes, inside
from spacy_seqgpt.models import ModelLoadError, SharedModel

TEXT = "Tim Cook met Olaf Scholz in Berlin."


@pytest.fixture
def saved(seqgpt_tiny, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"labels": NER_LABELS, "model": {"name": seqgpt_tiny}})
    nlp.add_pipe("seqgpt_textcat", config={"labels": CAT_LABELS, "model": {"name": seqgpt_tiny}})
    nlp.to_disk(tmp_path / "pipeline")
    return nlp, tmp_path / "pipeline"


def annotations(nlp):
    doc = nlp(TEXT)
    return [(e.text, e.label_) for e in doc.ents], doc.cats


@pytest.mark.parametrize("name", ["../escape.txt", "/tmp/absolute.txt", "a/../../escape.txt", "C:\\escape.txt",
                                  "model/../../escape.txt", ""])
def test_bytes_naming_files_outside_their_folder_are_refused_and_write_nothing(tmp_path, name):
    data = srsly.msgpack_dumps({"cfg": b"{}", name: b"pwned"})
    with pytest.raises(ValueError, match="not a relative path|leads outside|not a file name"):
        folder_from_bytes(data, lambda folder: None)
    assert not list(tmp_path.parent.glob("escape.txt")) and not (tmp_path.parent.parent / "escape.txt").exists()
    assert inside(tmp_path, "model/config.json") == tmp_path / "model" / "config.json"


def test_component_bytes_with_an_escaping_name_are_refused(saved):
    nlp, _ = saved
    data = srsly.msgpack_loads(nlp.get_pipe("seqgpt_textcat").to_bytes())
    data["../../outside"] = b"x"
    with pytest.raises(ValueError, match="not a relative path"):
        nlp.get_pipe("seqgpt_textcat").from_bytes(srsly.msgpack_dumps(data))


@pytest.mark.parametrize("pointer", ["../../elsewhere/model", "/etc"])
def test_weights_in_must_stay_inside_the_saved_pipeline(saved, pointer):
    _, path = saved
    cfg = srsly.read_json(path / "seqgpt_textcat" / "cfg")
    assert cfg["weights_in"] == "../seqgpt_ner/model"  # the shared copy, written once
    srsly.write_json(path / "seqgpt_textcat" / "cfg", {**cfg, "weights_in": pointer})
    with pytest.raises(ValueError, match="leads outside the pipeline folder"):
        spacy.load(path)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_weights_that_changed_since_they_were_saved_are_refused(saved, damage):
    _, path = saved
    weights = path / "seqgpt_ner" / "model" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-3] + bytes([data[-3] ^ 1]) + data[-2:] if damage == "flip" else data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="not the ones the pipeline saved"):
        spacy.load(path)


def test_a_save_cut_short_leaves_the_last_good_pipeline(saved, monkeypatch):
    nlp, path = saved
    expected = annotations(nlp)

    def full_disk(self, folder):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SharedModel, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        nlp.to_disk(path)
    monkeypatch.undo()
    assert not [p.name for p in path.iterdir() if p.name.startswith(".")]  # no draft left behind
    assert annotations(spacy.load(path)) == expected


def test_a_component_folder_that_was_never_written_is_an_error_not_the_source_model(saved):
    _, path = saved
    shutil.rmtree(path / "seqgpt_textcat")
    with pytest.raises(ValueError, match="seqgpt_textcat.*not saved completely"):
        spacy.load(path)
    (path / "seqgpt_ner" / "model" / "model.safetensors").unlink()
    shutil.rmtree(path / "seqgpt_ner" / "model")
    with pytest.raises(ValueError, match="weights .* are missing"):
        spacy.load(path, exclude=["seqgpt_textcat"])


def rehash(pipeline):
    """Record the shared model folder's files as they are now, as whoever crafts a pipeline can:
    the hash detects damage, the checks must refuse a crafted folder by themselves."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for file in sorted(p for p in (pipeline / "seqgpt_ner" / "model").rglob("*") if p.is_file() or p.is_symlink()):
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    for name in ("seqgpt_ner", "seqgpt_textcat"):
        cfg = srsly.read_json(pipeline / name / "cfg")
        srsly.write_json(pipeline / name / "cfg", {**cfg, "weights_id": digest.hexdigest()})


def test_a_saved_config_that_trusts_remote_code_is_refused_and_runs_no_code(saved, tmp_path):
    _, path = saved
    model = path / "seqgpt_ner" / "model"
    marker = tmp_path / "pwned"
    (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                   "from transformers import BloomForCausalLM as EvilModel\n")
    config = srsly.read_json(model / "config.json")
    srsly.write_json(model / "config.json", {**config, "auto_map": {"AutoModelForCausalLM": "evil.EvilModel"}})
    rehash(path)
    text = (path / "config.cfg").read_text()
    assert text.count("trust_remote_code = false") == 2  # in each component's model block
    (path / "config.cfg").write_text(text.replace("trust_remote_code = false", "trust_remote_code = true"))
    refused = r"trust_remote_code = true.*never run.*under \[components\.seqgpt_ner\.model\]"  # where the fix goes
    with pytest.raises(ModelLoadError, match=refused):
        nlp = spacy.load(path)
        nlp(TEXT)
    assert not marker.exists()
    # The user can load it by saying no: the folder's own weights, no code
    nlp = spacy.load(path, config={"components": {name: {"model": {"trust_remote_code": False}}
                                                  for name in ("seqgpt_ner", "seqgpt_textcat")}})
    assert annotations(nlp) == annotations(saved[0]) and not marker.exists()


def test_files_besides_the_weights_are_covered_by_the_weights_id(saved):
    _, path = saved
    config = srsly.read_json(path / "seqgpt_ner" / "model" / "config.json")
    srsly.write_json(path / "seqgpt_ner" / "model" / "config.json", {**config, "n_layer": 2})
    with pytest.raises(ModelLoadError, match="not the ones the pipeline saved"):
        spacy.load(path)


@pytest.mark.parametrize("craft", ["index", "index-list", "link", "pickle"])
def test_a_model_folder_that_reads_outside_itself_or_pickles_is_refused(saved, tmp_path, craft):
    _, path = saved
    model = path / "seqgpt_ner" / "model"
    weights = model / "model.safetensors"
    if craft == "index":  # no weights inside, an index naming a shard outside the pipeline
        outside = tmp_path / "outside.safetensors"
        shutil.move(weights, outside)
        srsly.write_json(model / "model.safetensors.index.json",
                         {"metadata": {}, "weight_map": {"x": str(outside)}})
        expected = "outside"
    elif craft == "index-list":  # a weight map that is no mapping (its shards cannot even be listed)
        srsly.write_json(model / "model.safetensors.index.json", {"metadata": {}, "weight_map": [["x"]]})
        expected = "not a mapping"
    elif craft == "link":
        outside = tmp_path / "outside.safetensors"
        shutil.move(weights, outside)
        weights.symlink_to(outside)
        expected = "is a link"
    else:
        (model / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
        expected = "only pickle reads"
    rehash(path)
    # a link is refused with the rest of the component's folder, before its weights are looked at
    with pytest.raises(ValueError if craft == "link" else ModelLoadError, match=expected):
        spacy.load(path)


def test_bytes_that_point_at_weights_beside_them_are_refused(saved, tmp_path):
    nlp, _ = saved
    textcat = nlp.get_pipe("seqgpt_textcat")
    files = srsly.msgpack_loads(textcat.to_bytes())
    assert any(name.startswith("model/") for name in files)  # bytes carry their weights
    cfg = srsly.json_loads(files["cfg"])
    crafted = {"cfg": srsly.json_dumps({**cfg, "weights_in": "../elsewhere/model"}).encode()}
    with pytest.raises(ValueError, match="point at weights outside them"):
        textcat.from_bytes(srsly.msgpack_dumps(crafted))


def test_a_saved_config_that_names_a_hub_kernel_loads_with_built_in_attention(saved, monkeypatch):
    """transformers would fetch and run a hub kernel named in config.json; a saved pipeline never does."""
    import kernels

    def fetch(*args, **kwargs):
        raise AssertionError("a hub kernel was fetched")

    monkeypatch.setattr(kernels, "get_kernel", fetch)
    nlp, path = saved
    model = path / "seqgpt_ner" / "model"
    config = srsly.read_json(model / "config.json")
    srsly.write_json(model / "config.json", {**config, "attn_implementation": "kernels-community/flash-attn"})
    rehash(path)
    loaded = spacy.load(path)
    assert annotations(loaded) == annotations(nlp)
    assert loaded.get_pipe("seqgpt_ner").shared.model.config._attn_implementation in ("sdpa", "eager")


@pytest.mark.parametrize("link", ["component", "cfg", "inside"])
def test_links_in_a_saved_component_are_refused(saved, tmp_path, link):
    _, path = saved
    component = path / "seqgpt_textcat"
    elsewhere = tmp_path / "elsewhere"
    if link == "component":  # the whole folder is a link to one elsewhere
        shutil.move(component, elsewhere)
        component.symlink_to(elsewhere, target_is_directory=True)
    elif link == "cfg":
        elsewhere.mkdir()
        shutil.move(component / "cfg", elsewhere / "cfg")
        (component / "cfg").symlink_to(elsewhere / "cfg")
    else:
        (component / "notes").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="seqgpt_textcat: .* is a link.*must hold its files itself"):
        spacy.load(path)


@pytest.mark.parametrize("craft, expected", [
    ({"weights_id": 123}, "weights_id that is not a hash"),
    ({"weights_id": None}, "records no weights_id, but the folder has weights"),
    ({"weights_in": ["../seqgpt_ner/model"]}, "is not a folder name"),
    (b"\xff\xfe{}", "cannot be read"),
    (b"{not json", "cannot be read"),
])
def test_crafted_component_settings_are_named(saved, craft, expected):
    _, path = saved
    cfg = path / "seqgpt_textcat" / "cfg"
    if isinstance(craft, bytes):
        cfg.write_bytes(craft)
    else:
        srsly.write_json(cfg, {**srsly.read_json(cfg), **craft})
    with pytest.raises(ValueError, match=expected):
        spacy.load(path)


@pytest.mark.parametrize("craft", ["ids past the embeddings", "no vocabulary"])
def test_a_crafted_tokenizer_is_refused_when_loaded_not_at_the_first_doc(saved, craft):
    _, path = saved
    model = path / "seqgpt_ner" / "model"
    if craft == "ids past the embeddings":
        tokenizer = srsly.read_json(model / "tokenizer.json")
        tokenizer["model"]["vocab"]["Tim"] = 50_000
        srsly.write_json(model / "tokenizer.json", tokenizer)
        expected = "token ids up to 50000, but the model has embeddings for"
    else:  # a slow tokenizer class whose vocabulary file is not there
        (model / "tokenizer.json").unlink()
        settings = json.loads((model / "tokenizer_config.json").read_text())  # (ints too big for srsly's ujson)
        (model / "tokenizer_config.json").write_text(json.dumps({**settings, "tokenizer_class": "LlamaTokenizer"}))
        expected = "turns text into no tokens"
    rehash(path)
    with pytest.raises(ModelLoadError, match=expected):
        spacy.load(path)


@pytest.mark.parametrize("data, expected", [
    (b"\xc1 not msgpack", "not a component's files .*msgpack"),
    (srsly.msgpack_dumps({"model": b"x", "model/config.json": b"{}"}), "both a file and a folder"),
])
def test_bytes_that_are_not_a_component_s_files_are_named(saved, data, expected):
    nlp, _ = saved
    with pytest.raises(ValueError, match=expected):
        nlp.get_pipe("seqgpt_textcat").from_bytes(data)
