"""The shipped pipeline config assembles into a pipeline that loads and runs offline."""
import os
import subprocess
import sys
from pathlib import Path

import spacy

CONFIGS = Path(__file__).parent.parent / "configs"


def test_seqgpt_560m_config_assembles_with_a_local_model(tmp_path, tiny_bloom):
    out = tmp_path / "pipeline"
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "assemble", str(CONFIGS / "seqgpt_560m.cfg"), str(out),
         "--vars.model", tiny_bloom],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr
    nlp = spacy.load(out)
    assert nlp.pipe_names == ["sentencizer", "seqgpt_ner", "seqgpt_textcat"]
    assert nlp.get_pipe("seqgpt_ner").labels == ("person", "organization", "location", "miscellaneous")
    assert nlp.get_pipe("seqgpt_ner").shared is nlp.get_pipe("seqgpt_textcat").shared
    doc = nlp("First sentence. Second one.")
    assert set(doc.cats) == {"sports", "politics", "business", "technology"}
