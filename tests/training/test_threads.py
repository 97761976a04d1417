"""The trainer's thread governor against a simulated machine: two cores, and another process
that takes one of them for a while."""
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_seqgpt.training.threads import MIN_SECONDS, RECHECK_EVERY, TRIAL_STEPS, ThreadGovernor

# Seconds a step takes at each thread count, idle and beside a process that keeps one core busy
# (the shapes measured: two threads collapse, one thread keeps the free core).
IDLE = {2: 3.5, 1: 6.0}
BUSY = {2: 25.0, 1: 6.3}


def run(busy_steps, steps, times=None):
    """The thread count of every step of a run whose steps in ``busy_steps`` share a core."""
    chosen = []
    governor = ThreadGovernor(2, set_threads=lambda n: chosen.append(("set", n)))
    counts = []
    for step in range(steps):
        table = times or (BUSY if step in busy_steps else IDLE)
        counts.append(governor.current)
        governor.step_done(table[governor.current])
    return counts, governor


def test_an_idle_machine_keeps_full_threads_after_one_trial_window():
    counts, governor = run(set(), 200)
    assert counts[:TRIAL_STEPS] == [2] * TRIAL_STEPS
    assert counts[TRIAL_STEPS:2 * TRIAL_STEPS] == [1] * TRIAL_STEPS  # the one trial of one thread
    assert counts[2 * TRIAL_STEPS:] == [2] * (200 - 2 * TRIAL_STEPS)
    assert governor.switches == 2


def test_a_busy_core_moves_training_to_one_thread_and_back_when_it_is_free():
    busy = set(range(50, 150))
    counts, _ = run(busy, 260)
    # within a window and a trial of the load arriving, one thread; while the load stays, full
    # threads only for a window every RECHECK_EVERY steps
    during = counts[50 + 2 * TRIAL_STEPS:150]
    assert during[0] == 1 and during.count(2) <= (len(during) // RECHECK_EVERY + 1) * TRIAL_STEPS
    # and within a recheck of the load leaving, full threads again, to the end
    back = 150 + RECHECK_EVERY + 2 * TRIAL_STEPS
    assert all(count == 2 for count in counts[back:])
    seconds_busy = sum((BUSY if step in busy else IDLE)[count] for step, count in enumerate(counts) if step in busy)
    assert seconds_busy < 1.5 * len(busy) * BUSY[1]  # far from the collapse (25 s a step)


def test_a_machine_busy_from_the_start_is_found_by_the_first_trial():
    counts, _ = run(set(range(1000)), 100)
    assert counts[2 * TRIAL_STEPS:].count(2) <= (100 // RECHECK_EVERY + 1) * TRIAL_STEPS


def test_short_steps_and_one_thread_runs_are_never_touched():
    counts, governor = run(set(), 100, times={2: MIN_SECONDS / 2, 1: MIN_SECONDS / 4})
    assert set(counts) == {2} and governor.switches == 0
    single = ThreadGovernor(1, set_threads=lambda n: (_ for _ in ()).throw(AssertionError("set")))
    for _ in range(50):
        single.step_done(10.0)
    assert single.current == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.6, 60.0), st.floats(0.6, 60.0)), min_size=1, max_size=120))
def test_only_full_threads_or_one_are_ever_set_and_each_set_is_a_change(times):
    applied = []
    governor = ThreadGovernor(4, set_threads=applied.append)
    for full, one in times:
        before = governor.current
        governor.step_done(full if governor.current == 4 else one)
        if applied and governor.current != before:
            assert applied[-1] == governor.current
    assert set(applied) <= {1, 4}
    assert all(a != b for a, b in zip(applied, applied[1:]))
    assert len(applied) == governor.switches
