"""kill -9 through the real CLI (once at a random moment, once during an asynchronous checkpoint
write), then resume: the final checkpoint equals an uninterrupted run's bit for bit.

`experiments/kill_resume.py --trials=N` runs many such trials and writes a table.
"""

import random

import numpy as np
import pytest

from experiments.kill_resume import (
    committed_steps,
    final_state,
    kill_during_run,
    run_to_end,
)

STEPS = 4


@pytest.mark.slow
def test_kill_9_twice_then_resume_is_bit_identical(data_dir, tmp_path):
    watched = kill_during_run(tmp_path / "reference", data_dir, STEPS, aim="none", delay=0.0)
    assert watched["finished_before_kill"]
    _, reference = final_state(tmp_path / "reference")

    delay = random.Random(0).uniform(0.0, 0.5 * watched["stepping_s"])
    for attempt in range(3):
        # On a loaded machine the killed run can step faster than the reference did (seen in
        # CI): then it finishes before the kill, and the next attempt kills sooner.
        workdir = tmp_path / f"killed{attempt}"
        first = kill_during_run(workdir, data_dir, STEPS, aim="time", delay=delay)
        if not first["finished_before_kill"]:
            break
        delay /= 4
    assert not first["finished_before_kill"], "the kill came after the run had finished"
    newest = max(committed_steps(workdir), default=0)
    second = kill_during_run(workdir, data_dir, STEPS, aim="write", delay=0.0, min_step=newest)
    assert second["write_in_flight"], "the second kill should land during a checkpoint write"
    assert second["newest_at_kill"] < STEPS

    resumed_from = run_to_end(workdir, data_dir, STEPS)
    assert resumed_from == second["newest_at_kill"]
    step, state = final_state(workdir)
    assert step == STEPS and state.keys() == reference.keys()
    for name, value in reference.items():
        assert np.array_equal(state[name], value), name
