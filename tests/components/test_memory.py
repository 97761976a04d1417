"""Memory is bounded by the settings, never by the text: span questions over run-on sentences
and long tokens, in a child process under a memory limit (``bounded_memory.py``), so a
regression fails here instead of taking the machine."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a child process that loads the model

CHILD = Path(__file__).with_name("bounded_memory.py")


def run_child(*args, timeout=600):
    result = subprocess.run([sys.executable, str(CHILD), *map(str, args)], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"the child failed (over its memory limit?):\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.splitlines()[-1])


def test_span_questions_take_a_window_of_the_budget_whatever_the_sentence(tiny_llama):
    found = run_child(tiny_llama, "typing_run_on", "rel_run_on", "typing_long_token", "typing_longer_token",
                      "events_run_on")
    # 150 names in one 9.4k-character sentence: each asked about in a window, none left out
    assert found["typing_run_on"]["ents"] == [150] and "over_window" not in found["typing_run_on"]["stats"]
    # 60 names in 3.7k characters: the 200 nearest pairs asked
    assert found["rel_run_on"]["rel"] == [200] and "over_window" not in found["rel_run_on"]["stats"]
    # a name that is one token over the budget is counted, and the other name still typed
    for name in ("typing_long_token", "typing_longer_token"):
        assert found[name]["stats"]["over_window"] == 1 and found[name]["ents"] == [2]
    # the confirm step and the arguments ask about every trigger of the run-on sentence
    assert found["events_run_on"]["confirmed"] == 150 and "over_window" not in found["events_run_on"]["stats"]


def test_random_texts_go_through_every_component_bytes_docbins_and_two_processes(tiny_llama):
    """Hypothesis, in the child under its limit: long run-on sentences, long tokens and odd
    Unicode with many entities through all seven components, ``Doc.to_bytes``/``from_bytes``,
    a DocBin and ``nlp.pipe(n_process=2)`` (``bounded_memory.fuzz``)."""
    found = run_child(tiny_llama, "fuzz", 8)
    assert found["docs"] >= 8
