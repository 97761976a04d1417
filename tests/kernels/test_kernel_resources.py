"""The attention kernels compiled for sm_80 and sm_90 without a GPU: no spills, large tiles kept.

The head-dim-128 bf16 subset of ``benchmarks/kernel_resources.py`` (the hardest head dim; fp16
compiles alike), in a process of its own: the tests run Triton's interpreter, which replaces
``triton.jit`` and cannot compile.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import load_script, ROOT

pytestmark = pytest.mark.slow  # compiles every kernel configuration for the GPU with ptxas

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def check():
    """The script as a module (imported here it leaves the interpreter's environment alone)."""
    return load_script(ROOT / "benchmarks" / "kernel_resources.py")


@pytest.fixture(scope="module")
def compiles(tmp_path_factory):
    out = tmp_path_factory.mktemp("resources") / "compiles.json"
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "benchmarks/kernel_resources.py", "--dtype", "bf16", "--head-dim", "128",
                             "--jobs", "2", "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    return result, json.loads(out.read_text()) if out.exists() else []


def test_every_config_the_autotuner_may_try_compiles_without_spills(compiles):
    result, rows = compiles
    assert rows, result.stderr[-2000:]
    bad = [row for row in rows if row["error"] or row["spill_bytes"] or not row["ok"]]
    assert not bad, bad[:5]
    assert result.returncode == 0, result.stdout[-3000:]
    kernels = {(row["kernel"], row["arch"], row["combination"]) for row in rows}
    assert len(kernels) == 3 * 2 * 6  # every kernel, architecture and caller's combination was compiled


def test_each_callers_combination_keeps_a_large_tile(compiles, check):
    _, rows = compiles
    large = check.LARGE_TILES
    assert large[("forward", 90)] == 8192 and large[("dkdv", 80)] == 2048  # the floors
    for row in rows:
        if row["combination"] == "all":
            continue
        best = max(r["block_m"] * r["block_n"] for r in rows if r["ok"] and (r["kernel"], r["arch"], r["combination"])
                   == (row["kernel"], row["arch"], row["combination"]))
        assert best >= large[row["kernel"], row["arch"]], row


def test_the_check_fails_on_a_spill_an_error_or_a_lost_large_tile(compiles, check):
    result, rows = compiles
    assert f"{len(rows)} compiles" in result.stdout
    clean = check.Compile("forward", 90, "bf16", 128, "packed", 128, 64, 8, 2, registers=200, shared_bytes=90000)
    assert check.problems([clean]) == []
    spilling = check.Compile("forward", 90, "bf16", 128, "packed", 128, 64, 8, 3, registers=255, spill_bytes=8)
    failed = check.Compile("forward", 90, "bf16", 128, "packed", 64, 64, 4, 2, error="CompilationError: x")
    found = check.problems([clean, spilling, failed])
    assert len(found) == 2 and "spills 8 bytes" in found[0] and "CompilationError" in found[1]
    small = check.Compile("dkdv", 80, "bf16", 128, "tagger", 32, 32, 4, 2, registers=100, shared_bytes=1000)
    assert check.problems([small]) == ["dkdv sm_80 bf16 D=128 tagger: largest clean tile 1024 < 2048"]
