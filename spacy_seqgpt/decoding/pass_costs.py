"""What decoding has learnt about a model, kept across decoders: what a forward pass costs and
how often guessed tokens are kept.

The decoder prices a pass as ``overhead + tokens computed`` (``length_buckets``, ``pass_width``):
jump-forward and speculation buy fewer passes with more tokens, which pays only where a pass
costs much more than a token. How much more depends on the model, the device and the threads
(a 135M model on one CPU thread computes a pass of 16 rows in about the time of 10 more tokens;
an H200 computes thousands of tokens in the time of a pass). So on CPU the overhead is measured
from the decoder's own passes (seconds against tokens, least squares): where a pass costs
little, ``pass_width`` leaves the guesses out and speculation switches itself off. On CUDA,
timing a pass would wait for the GPU at every step, so the device's measured constant stays.
"""
import weakref
from collections import deque
from typing import Deque, Tuple

import numpy as np

# What one more forward pass costs, in tokens, until this model's passes have been measured
# (benchmarks/pass_overhead.py): a pass reads every weight once and launches every layer's
# kernels. At the 560M shape: on 2 CPU cores about 0.2 s a pass and 4-6 ms a token; on an H200
# (bf16, eager) 13-16 ms a pass up to 4,096 tokens, 67 ms at 16,384 (the fit: 4,583).
PASS_OVERHEAD_TOKENS = {"cpu": 48, "cuda": 4096}
DEFAULT_PASS_OVERHEAD_TOKENS = 512  # other devices: not measured
MEASURED_DEVICES = ("cpu",)  # where timing a pass does not wait for the device
MIN_PASSES = 12  # passes timed before the measurement replaces the constant
KEPT_PASSES = 512  # the most recent passes the fit reads


class PassCosts:
    """One model's pass timings and speculation counts, shared by every decoder on it."""

    def __init__(self, device_type: str):
        self.prior = PASS_OVERHEAD_TOKENS.get(device_type, DEFAULT_PASS_OVERHEAD_TOKENS)
        self.measures = device_type in MEASURED_DEVICES
        self.passes: Deque[Tuple[int, float]] = deque(maxlen=KEPT_PASSES)  # (tokens computed, seconds)
        self.drafted = self.accepted = 0

    def add_pass(self, tokens: int, seconds: float) -> None:
        if self.measures:
            self.passes.append((tokens, seconds))

    @property
    def overhead(self) -> float:
        """A pass's fixed cost in tokens: the intercept over the slope of seconds against tokens,
        once there are enough passes of different sizes to fit; the device's constant before."""
        if len(self.passes) < MIN_PASSES:
            return self.prior
        tokens, seconds = np.array(self.passes, dtype=np.float64).T
        if tokens.max() < 2 * tokens.min():  # all passes alike: no slope to read
            return self.prior
        slope, intercept = np.polyfit(tokens, seconds, 1)
        if slope <= 0:
            return self.prior
        return float(np.clip(intercept / slope, 0.0, 16 * self.prior))

    @property
    def accept_rate(self) -> float:
        """The share of guessed tokens kept so far (Laplace's rule: 1/2 before any)."""
        return (self.accepted + 1) / (self.drafted + 2)


_COSTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def pass_costs(shared) -> PassCosts:
    """The costs measured on ``shared`` (a loaded model), kept as long as the model is."""
    if shared not in _COSTS:
        _COSTS[shared] = PassCosts(shared.device.type)
    return _COSTS[shared]
