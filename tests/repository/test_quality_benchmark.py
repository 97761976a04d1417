"""``benchmarks/quality.py``'s cells from scored records: which figure goes in which column."""
from pathlib import Path

import pytest

from conftest import ROOT, load_script

from spacy_seqgpt.data.catalog import CROSSNER_DOMAINS
from spacy_seqgpt.data.records import make_record
from spacy_seqgpt.evaluation.metrics import score_records



@pytest.fixture(scope="module")
def quality():
    return load_script(ROOT / "benchmarks" / "quality.py")


def entity_record(source, text, spans):
    answer = {"person": [text[a:b] for a, b in spans]}
    return make_record("extract", text, ["person"], answer, source, "en",
                       spans=[(a, b, "person") for a, b in spans])


def test_cells_are_span_f1_domain_means_and_exact_match_accuracy(quality):
    records = [entity_record("conll2003", "Anna met Ben.", [(0, 4), (9, 12)])]
    predictions = [{"person": ["Anna"]}]  # one of two: P 1, R 0.5
    for i, domain in enumerate(CROSSNER_DOMAINS):
        records.append(entity_record(f"crossner-{domain}", "Cleo sang.", [(0, 4)]))
        predictions.append({"person": ["Cleo"] if i % 2 == 0 else []})  # found in 3 of 5 domains
    for gold, predicted in ((["travel"], ["travel"]), (["travel"], ["travel", "card"]), (["card"], [])):
        records.append(make_record("classify", "Where is my card?", ["travel", "card"], gold, "banking77", "en"))
        predictions.append(predicted)
    cells = quality.columns(records, predictions, score_records(records, predictions, [""] * len(records)))
    assert cells["CoNLL03"] == pytest.approx([2 / 3, 1.0, 0.5])  # F1, precision, recall
    assert [cells[f"X-{d[:4]}"][0] for d in CROSSNER_DOMAINS] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert cells["X mean"] == pytest.approx([0.6, 0.6, 0.6])
    assert quality.cell_text(cells["CoNLL03"]) == "0.667 (1.00/0.50)" and quality.cell_text(0.25) == "0.250"
    assert cells["Banking77"] == pytest.approx(1 / 3)  # two labels for one is not a hit
    assert "TNEWS" not in cells and "RE-RC" not in cells  # no records, no cell


def test_the_dev_split_reads_the_held_in_development_files(quality, tmp_path):
    for item in quality.DEV_FILES:  # one sentence each, in CoNLL's layout
        (tmp_path / item.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / item.path).write_text("Anna\tB-person\nsang\tO\n\n", encoding="utf8")
    records = quality.test_records(tmp_path, 5, "dev")
    assert sorted(r["source"] for r in records) == ["conll2003", "wnut17"]
    predictions = [{"person": ["Anna"]}, {"person": []}]
    cells = quality.columns(records, predictions, score_records(records, predictions, ["", ""]))
    assert cells["dev mean"] == pytest.approx([0.5, 0.5, 0.5])
    assert quality.test_records(tmp_path, 5, "test") == []  # no test files there


def test_a_domain_missing_leaves_the_mean_out(quality):
    records = [entity_record("crossner-ai", "Cleo sang.", [(0, 4)])]
    predictions = [{"person": ["Cleo"]}]
    cells = quality.columns(records, predictions, score_records(records, predictions, [""]))
    assert cells == {"X-ai": [1.0, 1.0, 1.0]}


@pytest.mark.slow  # the benchmark in a subprocess, on a tiny model
def test_the_table_runs_on_a_model_folder_made_of_links(tiny_llama, tmp_path):
    """The Hugging Face cache's snapshots are folders of links: a model named there is measured."""
    import subprocess
    import sys

    linked = tmp_path / "snapshot"
    linked.mkdir()
    for file in Path(tiny_llama).iterdir():
        (linked / file.name).symlink_to(file)
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--data-dir",
                             str(ROOT / "assets" / "datasets"), "--model", f"tiny={linked}", "--limit", "1",
                             "--max-new-tokens", "4", "--thresholds", "0.3,0.01"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    for row in ("constrained", "free", "span search >= 0.3", "span search >= 0.01"):
        assert f"| tiny | {row} |" in result.stdout
