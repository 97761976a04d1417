"""What a forward pass costs on a device, and what decoding on a model has guessed.

The decoder prices a pass as ``overhead + tokens computed`` (``length_buckets``, ``pass_width``):
jump-forward and speculation buy fewer passes with more tokens, which pays only where a pass
costs much more than a token. The overhead is the device's measured constant
(``benchmarks/pass_overhead.py``), not a timing taken while decoding: a measurement would differ
from process to process, and so would the shapes of the passes and the last bits of the scores,
while a pipeline must answer the same text the same way in every process (``n_process``).
"""
# What one more forward pass costs, in tokens: a pass reads every weight once and launches every
# layer's kernels. At the 560M shape: on 2 CPU cores about 0.2 s a pass and 4-6 ms a token; on an
# H200 (bf16, eager) 13-16 ms a pass up to 4,096 tokens, 67 ms at 16,384 (the fit: 4,583).
PASS_OVERHEAD_TOKENS = {"cpu": 48, "cuda": 4096}
DEFAULT_PASS_OVERHEAD_TOKENS = 512  # other devices: not measured


class PassCosts:
    """One loaded model's pass overhead (in tokens) and the guesses decoding on it drafted and
    kept (counted for reports; each decoder decides on its own counts): ``SharedModel.costs``."""

    def __init__(self, overhead: float):
        self.overhead = overhead
        self.drafted = self.accepted = 0

    @classmethod
    def on(cls, device) -> "PassCosts":
        """The measured overhead of a ``torch.device``'s kind."""
        return cls(PASS_OVERHEAD_TOKENS.get(device.type, DEFAULT_PASS_OVERHEAD_TOKENS))
