"""The README's main job runs from a fresh checkout, offline."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # the quickstart as a user runs it

QUICKSTART = ROOT / "examples" / "quickstart.py"


def test_quickstart_runs_offline_and_reloads_the_same():
    result = subprocess.run([sys.executable, str(QUICKSTART)], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ents: ") == 3
    assert "Saved, loaded back, same annotations" in result.stdout
