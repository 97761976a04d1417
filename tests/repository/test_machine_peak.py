"""``benchmarks/machine_peak.py``: the work it counts for a model's passes, which the benchmarks
divide by the measured GEMM peak."""
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import ROOT, load_script
from spacy_seqgpt.decoding.model_calls import cache_keyword, returned_cache


@pytest.fixture(scope="module")
def peak():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield load_script(ROOT / "benchmarks" / "machine_peak.py")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_linear_work_counts_every_weight_of_the_body_twice_and_not_the_output_layer(peak, tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    body = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"]
    assert peak.linear_flops_per_token(model) == 2 * sum(m.weight.numel() for m in body)
    assert set(peak.linear_shapes(model)) == {(m.in_features, m.out_features) for m in body}
    layers = peak.skeleton(tiny_llama)  # the same layers from the config alone, no weights read
    assert peak.linear_shapes(layers) == peak.linear_shapes(model)
    assert peak.linear_flops_per_token(layers) == peak.linear_flops_per_token(model)
    assert peak.gemm_rate(peak.linear_shapes(model)[:1], 4, torch.float32, repeats=1, min_seconds=0.001) > 0


def test_pass_timer_tells_prompts_from_answer_steps_and_counts_real_tokens(peak, tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    timer = peak.PassTimer(model)
    width = timer.PREFILL_WIDTH + 4
    ids = torch.randint(3, 50, (2, width))
    mask = torch.ones(2, width, dtype=torch.long)
    mask[1, :5] = 0  # five padding positions on the left of the second row

    def decode():
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask, use_cache=True)
            step_mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
            model(input_ids=ids[:, -1:], attention_mask=step_mask, **{cache_keyword(model): returned_cache(out)})

    timer.run(decode)
    assert timer.passes == {"prefill": 1, "decoding": 1}
    assert timer.tokens == {"prefill": 2 * width - 5, "decoding": 2}
    assert all(seconds > 0 for seconds in timer.seconds.values())
    model(input_ids=ids)  # the hooks are gone after the run
    assert timer.passes["prefill"] == 1
