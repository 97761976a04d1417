"""Training threads that survive a busy machine: torch's thread count chosen from the steps' own times.

torch splits every operation over its threads and waits for the last of them. When another
process takes one of the cores, the thread that shares it finishes late at every one of
those waits: a 2-thread step on 2 cores was measured 2.9x slower beside one busy core (and
6-12x in an earlier run beside another process; BENCHMARKS.md, "The CPU at its speed"), where
one thread would have had the free core to itself. No setting decides this
ahead: the load comes and goes. So the trainer times its steps: where a step takes clearly
longer than the steps at full threads did, it measures a few steps at one thread and keeps
whichever count is faster, and it looks again at full threads from time to time.

Steps shorter than ``MIN_SECONDS`` (tiny models, GPUs) are never acted on: their times are
noise, and a run's threads then stay as they were set.
"""
import statistics
from collections import deque
from typing import Callable, Dict, Optional

MIN_SECONDS = 0.5  # a step this long is timed reliably; shorter ones leave the threads alone
SLOWER = 1.5  # a window this much slower than the count's usual step: the machine got busier
TRIAL_STEPS = 3  # the window: steps timed at a count before it is judged
RECHECK_EVERY = 40  # steps at one thread before full threads are tried again


class ThreadGovernor:
    """Decides torch's thread count step by step: ``step_done(seconds)`` after each step.

    ``most``: the thread count the run started with (the most it uses); ``set_threads``: how a
    count is applied (``torch.set_num_threads``). The first window at full threads is followed
    by one at one thread, and the faster count is kept; after that, a window clearly slower
    than its count's usual step, or ``RECHECK_EVERY`` steps at one thread, tries the other count.
    ``switches`` counts the changes.
    """

    def __init__(self, most: int, set_threads: Optional[Callable[[int], None]] = None):
        if set_threads is None:
            import torch

            set_threads = torch.set_num_threads
        self.most = most
        self.current = most
        self.set_threads = set_threads
        self.switches = 0
        self._usual: Dict[int, float] = {}  # each count's step time, as last measured
        self._recent: deque = deque(maxlen=TRIAL_STEPS)
        self._since_switch = 0

    def step_done(self, seconds: float) -> None:
        if self.most <= 1 or seconds < MIN_SECONDS:
            return
        self._recent.append(seconds)
        self._since_switch += 1
        if len(self._recent) < TRIAL_STEPS:
            return
        now = statistics.median(self._recent)
        other = 1 if self.current == self.most else self.most
        if self._since_switch == TRIAL_STEPS:  # the first window at this count: judge it
            before = self._usual.get(other)
            self._usual[self.current] = now
            if before is None or before < now:  # the run's first window, or the other count was faster
                self._switch(other)
            return
        slowed = now > SLOWER * self._usual[self.current]
        self._usual[self.current] = now
        if slowed or (other == self.most and self._since_switch >= RECHECK_EVERY):
            self._switch(other)

    def _switch(self, threads: int) -> None:
        self.set_threads(threads)
        self.current = threads
        self._recent.clear()
        self._since_switch = 0
        self.switches += 1
