"""What a forward pass costs on a model, measured once, and what decoding on it has guessed.

The decoder prices a pass as ``overhead + tokens computed`` (``length_buckets``, ``pass_width``):
jump-forward and speculation buy fewer passes with more tokens, which pays only where a pass
costs much more than a token. How much more depends on the model, the device and the threads
(a 135M model on a CPU computes a pass in the time of a few dozen tokens; an H200 computes
thousands of tokens in the time of a pass). So on CPU the overhead is measured on the model
before its first answer: a few passes of different sizes are timed and seconds are fitted
against tokens. Where a pass costs little, ``pass_width`` leaves the guesses out, so
speculation switches itself off where it does not pay. The measurement is taken once per
loaded model and rounded to a power of two, so a pipeline answers the same text the same way
every time. On CUDA, timing would wait for the GPU, so the device's constant stays.
"""
import weakref
from typing import Callable, Sequence, Tuple

import numpy as np

# What one more forward pass costs, in tokens, where it is not measured (and the bound of a
# measurement): a pass reads every weight once and launches every layer's kernels
# (benchmarks/pass_overhead.py). At the 560M shape: on 2 CPU cores about 0.2 s a pass and 4-6 ms
# a token; on an H200 (bf16, eager) 13-16 ms a pass up to 4,096 tokens, 67 ms at 16,384 (4,583).
PASS_OVERHEAD_TOKENS = {"cpu": 48, "cuda": 4096}
DEFAULT_PASS_OVERHEAD_TOKENS = 512  # other devices: not measured
MEASURED_DEVICES = ("cpu",)  # where timing a pass does not wait for the device
CALIBRATION = ((1, 8), (4, 8), (8, 16), (16, 16))  # (rows, tokens a row) of the timed passes


class PassCosts:
    """One loaded model's pass overhead (in tokens) and the guesses decoding on it drafted and
    kept (counted for reports; each decoder decides on its own counts)."""

    def __init__(self, overhead: float):
        self.overhead = overhead
        self.drafted = self.accepted = 0


def fit_overhead(samples: Sequence[Tuple[int, float]], prior: float) -> float:
    """The fixed cost of a pass in tokens from ``(tokens, seconds)`` of timed passes: the
    intercept over the slope of a least-squares line, rounded to a power of two (timings vary;
    the decisions they feed should not) and kept within [1, 16 x ``prior``]; ``prior`` when the
    samples show no cost per token."""
    tokens, seconds = np.array(samples, dtype=np.float64).T
    if len(samples) < 2 or tokens.max() < 2 * tokens.min():
        return prior
    slope, intercept = np.polyfit(tokens, seconds, 1)
    if slope <= 0:
        return prior
    return float(2.0 ** np.clip(np.round(np.log2(max(intercept / slope, 1.0))), 0, np.log2(16 * prior)))


_COSTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def pass_costs(shared, run_pass: Callable[[int, int], float]) -> PassCosts:
    """The costs of ``shared`` (a loaded model), measured on first use where its device allows:
    ``run_pass(rows, width)`` runs one pass of that shape and returns its seconds. Kept as long
    as the model is."""
    if shared not in _COSTS:
        device = shared.device.type
        prior = PASS_OVERHEAD_TOKENS.get(device, DEFAULT_PASS_OVERHEAD_TOKENS)
        overhead = prior
        if device in MEASURED_DEVICES:
            run_pass(1, CALIBRATION[0][1])  # first-call costs out of the timing
            overhead = fit_overhead([(rows * width, min(run_pass(rows, width) for _ in range(2)))
                                     for rows, width in CALIBRATION], prior)
        _COSTS[shared] = PassCosts(overhead)
    return _COSTS[shared]
