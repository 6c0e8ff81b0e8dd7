"""The forward worker of refnet.runtime.interrupt: heavy passes from the main thread run in one
persistent worker thread (not a new thread per pass), results and errors reach the caller, and
a forked child gets a worker of its own."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from refnet.runtime import interrupt as I


def _run_in_worker(fn):
    """``fn()`` through run_interruptibly from the main thread; returns (result, worker thread)."""
    lock = threading.Lock()
    seen = []

    def run(hook):
        assert hook is not None and hook(None) is None  # the stop hook, not stopped
        seen.append(threading.current_thread())
        return fn()

    return I.run_interruptibly(run, lock), seen[0]


def test_one_worker_thread_for_all_passes():
    assert threading.current_thread() is threading.main_thread()
    a = np.arange(12.0).reshape(3, 4)
    r1, t1 = _run_in_worker(lambda: a @ a.T)
    r2, t2 = _run_in_worker(lambda: a.sum())
    np.testing.assert_array_equal(r1, a @ a.T)
    assert r2 == 66.0
    assert t1 is t2 and t1 is not threading.main_thread() and t1.name == "refnet-forward"


def test_errors_reach_the_caller_and_the_worker_goes_on():
    def bad():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        _run_in_worker(bad)
    r, t = _run_in_worker(lambda: 7)
    assert r == 7 and t.is_alive()


def test_interrupted_pass_stops_at_the_next_step():
    """The hook raises Interrupted once the caller's wait was broken (as Ctrl-C does): the
    worker ends that pass and serves the next."""
    lock = threading.Lock()
    started, release = threading.Event(), threading.Event()
    steps = []

    def run(hook):
        started.set()
        release.wait(10)
        for k in range(3):
            hook(None)
            steps.append(k)
        return "done"

    real_wait = threading.Event.wait
    calls = {"n": 0}

    def wait(self, timeout=None):
        if timeout == I.POLL_SECONDS:
            calls["n"] += 1
            if calls["n"] == 1:
                started.wait(10)
                raise KeyboardInterrupt
        return real_wait(self, timeout)

    threading.Event.wait = wait
    try:
        with pytest.raises(KeyboardInterrupt):
            I.run_interruptibly(run, lock)
    finally:
        threading.Event.wait = real_wait
    release.set()
    r, _ = _run_in_worker(lambda: "next")  # queued behind the interrupted pass, which stopped
    assert r == "next" and steps == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_its_own_worker():
    _run_in_worker(lambda: None)  # the parent's worker exists
    pid = os.fork()
    if pid == 0:  # child: the parent's worker thread does not exist here
        code = 1
        try:
            r, t = _run_in_worker(lambda: 5)
            code = 0 if r == 5 and t.is_alive() else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    done, status = os.waitpid(pid, os.WNOHANG)
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
        done, status = os.waitpid(pid, os.WNOHANG)
    if not done:  # (a hung child must not hang the suite)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert done and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
