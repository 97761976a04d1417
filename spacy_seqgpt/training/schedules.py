"""The cosine decay schedule the paper trains with, which thinc lacks (``@schedules``)."""
import math
from typing import Iterator

from thinc.api import registry


def cosine_rate(
    step: int, initial_rate: float, total_steps: int, warmup_steps: int = 0, min_rate: float = 0.0
) -> float:
    """The rate at ``step``: linear warm-up over ``warmup_steps``, then cosine decay to ``min_rate``
    at ``total_steps`` (and ``min_rate`` after)."""
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(f"cosine schedule: total_steps must be positive and warmup_steps non-negative, "
                         f"got {total_steps} and {warmup_steps}")
    if step < warmup_steps:
        return initial_rate * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_rate + (initial_rate - min_rate) * 0.5 * (1.0 + math.cos(math.pi * progress))


@registry.schedules("spacy_seqgpt.cosine.v1")
def cosine(initial_rate: float, total_steps: int, warmup_steps: int = 0, min_rate: float = 0.0) -> Iterator[float]:
    """thinc schedule: :func:`cosine_rate` at steps 0, 1, 2, ..."""
    cosine_rate(0, initial_rate, total_steps, warmup_steps, min_rate)  # check the settings now
    step = 0
    while True:
        yield cosine_rate(step, initial_rate, total_steps, warmup_steps, min_rate)
        step += 1
