"""Jobs side by side (the quickstart's stages): results by name, the first failure re-raised,
the other jobs stopped."""

import _thread
import threading
import time

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


def test_ctrl_c_in_the_caller_stops_every_job_before_it_returns():
    ended = []

    def presses_ctrl_c(stop):
        time.sleep(0.2)  # the main thread is waiting on the jobs by now
        _thread.interrupt_main()  # KeyboardInterrupt there, as a Ctrl-C
        ended.append(stop.wait(timeout=10))

    with pytest.raises(KeyboardInterrupt):
        run_concurrently({"a": presses_ctrl_c})
    assert ended == [True]  # the job saw the stop and had ended when the interrupt surfaced
