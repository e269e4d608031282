"""Jobs side by side (the quickstart's stages): results by name, the first failure re-raised,
the other jobs stopped."""

import threading

import pytest

from cascade.training.concurrent import Stopped, run_concurrently


def test_results_come_back_by_name_and_the_jobs_overlap():
    both_running = threading.Barrier(2, timeout=10)  # breaks (raises) if the jobs ran in turn

    def job(value):
        def run(stop):
            both_running.wait()
            return value

        return run

    assert run_concurrently({"a": job(1), "b": job(2)}) == {"a": 1, "b": 2}


def test_a_failure_stops_the_other_jobs_and_is_the_error_raised():
    stopped = threading.Event()

    def fails(stop):
        raise ValueError("bad config in stage a")

    def runs_until_stopped(stop):
        if not stop.wait(timeout=10):
            return "never stopped"
        stopped.set()
        raise Stopped("b stopped")

    with pytest.raises(ValueError, match="bad config in stage a"):
        run_concurrently({"b": runs_until_stopped, "a": fails})
    assert stopped.is_set()
