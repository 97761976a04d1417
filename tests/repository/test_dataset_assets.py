"""project.yml's `assets:`: every dataset file the presets read, from a pinned public source, with
the checksum of the copy the project measured on (../shared/datasets, where it is beside the
checkout), and its licence named in assets/README.md; scripts/dataset_assets.py checks them offline."""
import hashlib

import pytest

from conftest import DATASETS, ROOT, load_script

assets_script = load_script(ROOT / "scripts" / "dataset_assets.py")
PROJECT = ROOT / "project.yml"


@pytest.fixture(scope="module")
def declared():
    return assets_script.declared_assets(PROJECT)


def test_every_file_a_preset_or_the_evaluation_reads_is_declared_from_a_pinned_commit(declared):
    from spacy_seqgpt.data.catalog import CATALOG

    names = {asset.name for asset in declared}
    assert {item.path for item in CATALOG} <= names
    # the held-in dev splits (benchmarks/quality.py --split dev) and what the readers read beside a file
    assert {"conll2003/valid.txt", "wnut17/emerging.dev.conll", "tnews/label_index2en2zh.json"} <= names
    for asset in declared:
        source = asset.source
        assert len(source["commit"]) == 40 and asset.url.endswith(source["path"]), asset
    readme = (ROOT / "assets" / "README.md").read_text()
    for repo in {asset.source["repo"] for asset in declared}:  # each source named with its licence
        row = next((line for line in readme.splitlines() if line.startswith("| `") and repo in line), None)
        assert row is not None and row.rstrip("|").rsplit("|", 1)[1].strip(), repo


def test_the_declared_checksums_are_those_of_the_data_we_measured_on(declared):
    if not DATASETS.is_dir():
        pytest.skip(f"needs the datasets' shared copy at {DATASETS} (CI has it beside the checkout)")
    assert assets_script.undeclared_files(declared, DATASETS) == []
    for asset in declared:
        data = (DATASETS / asset.name).read_bytes()
        assert hashlib.md5(data).hexdigest() == asset.checksum, asset.name


def test_spacy_project_assets_finds_every_file_of_the_shared_copy_in_place(tmp_path, monkeypatch):
    """weasel (`spacy project assets`) reads the declarations as we do: on a project whose
    assets/full holds the shared copy, it checks each file by its own checksum and fetches nothing."""
    from weasel.cli import assets as weasel_assets

    if not DATASETS.is_dir():
        pytest.skip(f"needs the datasets' shared copy at {DATASETS} (CI has it beside the checkout)")
    (tmp_path / "project.yml").write_text(PROJECT.read_text())
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "full").symlink_to(DATASETS)
    fetched = []
    monkeypatch.setattr(weasel_assets, "download_file", lambda url, dest: fetched.append(url))
    weasel_assets.project_assets(tmp_path)
    assert fetched == []


def test_the_listing_runs_offline_and_tells_missing_matching_and_changed_files(declared, tmp_path, capsys):
    folder = tmp_path / "full"
    first, second = declared[0], declared[1]
    (folder / first.name).parent.mkdir(parents=True)
    (folder / second.name).parent.mkdir(parents=True, exist_ok=True)
    # a file with the declared checksum is needed to see "ok": stand one in by declaring its bytes
    (folder / first.name).write_bytes(b"same bytes")
    matching = assets_script.Asset(first.name, first.url, hashlib.md5(b"same bytes").hexdigest(), "")
    assert assets_script.asset_status(matching, folder) == "ok"
    assert assets_script.asset_status(first, folder) == "differs"
    assert assets_script.asset_status(second, folder) == "missing"
    (folder / "stray.txt").write_text("x")
    assert assets_script.undeclared_files(declared, folder) == ["stray.txt"]
    assert assets_script.main([str(PROJECT), "--against", str(folder)]) == 1  # a changed file fails the check
    output = " ".join(capsys.readouterr().out.split())
    assert f"{len(declared) - 1} missing, 1 differ; 1 files not declared" in output


@pytest.mark.parametrize("change, expected", [
    (("dest: \"assets/full/", "dest: \"elsewhere/"), "dest must be a file under assets/full/"),
    (("/1c8ed1e6d277d67c290a2309aead958082385029/", "/master/"), "40-hex commit"),
    (("checksum: \"", "checksum: \"x"), "checksum must be the file's md5"),
])
def test_a_malformed_declaration_is_named(tmp_path, change, expected):
    project = tmp_path / "project.yml"
    project.write_text(PROJECT.read_text().replace(*change, 1))
    with pytest.raises(ValueError, match=expected):
        assets_script.declared_assets(project)
