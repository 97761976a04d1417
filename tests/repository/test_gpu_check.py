"""``scripts/gpu_check.py`` on a CPU: its arguments, its dry run, and commands that would run as written."""
import shlex
import subprocess
import sys

import pytest

from conftest import load_script, ROOT
from spacy.cli._util import parse_config_overrides
from thinc.api import Config

from spacy_seqgpt.training.settings import load_settings

pytestmark = pytest.mark.slow  # gpu_check.py run as a script

SCRIPT = ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    return load_script(SCRIPT)


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True)


def test_the_dry_run_prints_every_step_and_runs_nothing(tmp_path):
    result = run("--dry-run", "--work", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr
    names = [line.split(":")[0][2:] for line in result.stdout.splitlines() if line.startswith("# ")]
    assert names == ["kernels", "real-model", "kernel-tests", "resources", "attention", "inference", "tagger-qlora",
                     "seqgpt-560m", "full-scale"]
    assert "tests/kernels/test_attention_kernel.py" in result.stdout and "benchmarks/attention.py" in result.stdout
    assert "--preset bloomz-560m" in result.stdout
    assert not (tmp_path / "work").exists()


def test_only_skip_and_local_models(tmp_path):
    model = tmp_path / "llama-7b"
    model.mkdir()
    result = run("--dry-run", "--only", "tagger-qlora", "seqgpt-560m", "--skip", "seqgpt-560m",
                 "--tagger-model", str(model))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# tagger-qlora") and "seqgpt-560m" not in result.stdout
    assert f"--paths.model {model}" in result.stdout and "init-tiny" not in result.stdout  # no model made


@pytest.mark.parametrize("args,message", [
    (["--tagger-model", "no/such/folder"], "pass a local copy"),
    (["--only", "everything"], "invalid choice"),
])
def test_bad_arguments_are_named(args, message):
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr


def test_without_a_gpu_it_says_so(gpu_check, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--only", "attention"]) == 1


def test_its_training_commands_name_real_configs_and_settings(gpu_check, tmp_path):
    """The overrides the training steps pass exist in the configs they name (a typo would cost a GPU run)."""
    steps = {step.name: step for step in gpu_check.steps(tmp_path, None, None)}
    spacy_train = next(c for c in steps["tagger-qlora"].commands if c[2:4] == ["spacy", "train"])
    overrides = parse_config_overrides(spacy_train[7:])
    config = Config().from_disk(ROOT / spacy_train[4])
    for key in overrides:
        section, name = key.rsplit(".", 1)
        node = config
        for part in section.split("."):
            node = node[part]
        assert name in node, key
    seqgpt_train = next(c for c in steps["seqgpt-560m"].commands if c[3:5] == ["seqgpt", "train"])
    settings = load_settings(ROOT / seqgpt_train[5], "ft", parse_config_overrides(seqgpt_train[8:]))
    assert settings.train.steps == 20 and settings.train.checkpoint_every == 10
    full_train = next(c for c in steps["full-scale"].commands if c[3:5] == ["seqgpt", "train"])
    settings = load_settings(ROOT / full_train[5], "ft", parse_config_overrides(full_train[8:]))
    assert settings.train.steps == 950 and settings.base_model == str(tmp_path / "smollm2-base")
    convert = next(c for c in steps["full-scale"].commands if c[3:5] == ["seqgpt", "convert-all"])
    assert convert[-3:] == ["--quota=0", "--train-limit=0", "--eval-limit=500"]  # the preset's, on --data-dir
    for command in (c for step in steps.values() for c in step.commands):
        for part in command:
            if part.endswith((".py", ".cfg", ".conll", ".annotated")) and not part.startswith("import"):
                assert (ROOT / part).exists(), shlex.join(command)


def test_the_report_is_written_whole_after_each_step(gpu_check, tmp_path):
    step = gpu_check.Step("attention", "a benchmark", [["true"]], 10)
    report = tmp_path / "report.md"
    gpu_check.write_report(report, "# GPU check", [(step, True, 90.0, "$ true\nfine"), (step, False, 6.0, "bad")])
    text = report.read_text()
    assert "| attention | a benchmark | ok | 1.5 |" in text and "| **failed** | 0.1 |" in text
    assert "fine" in text and not (tmp_path / "report.md.tmp").exists()


def test_the_kernels_step_names_shapes_the_benchmark_knows_and_fits_its_time(gpu_check, tmp_path):
    """``--only kernels``: its benchmark shapes are the benchmark's own (a typo would cost a GPU run),
    and its limit is 8 minutes."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import attention

    step = next(step for step in gpu_check.steps(tmp_path, None, None) if step.name == "kernels")
    benchmark = next(command for command in step.commands if "benchmarks/attention.py" in command)
    shapes = benchmark[benchmark.index("--shapes") + 1:]
    known = {f"{name}:{length}" for name, _, _, _, length in attention.SHAPES}
    assert shapes and set(shapes) <= known, shapes
    assert step.timeout <= 480 and any("--sync-check" in command for command in step.commands)
