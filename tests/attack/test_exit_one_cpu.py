"""A process allowed one CPU must exit after numba's threading layer started outside its main thread.

numba's TBB start leaves an empty task in the starting thread's TBB arena and waits for it at
interpreter exit; with one CPU TBB has no worker to run it, so a start in refnet's forward
thread (ResNet-50 under ``taskset -c 0``) or in a user's thread hung the process at exit for
ever (refnet.kernels._parallel.start_layer). Each case runs in a child process pinned to one CPU
and must print its marker and exit 0 well inside the timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PIN = "import os\nos.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"

USER_THREAD = PIN + r"""
import threading
from refnet.kernels._lazyjit import load_numba
import refnet.kernels._parallel as par

def go():
    numba = load_numba()
    numba.get_num_threads()
    print("layer", numba.threading_layer(), flush=True)

t = threading.Thread(target=go)
t.start()
t.join()
print("exiting", flush=True)
"""

# the forward-thread path of a heavy pass (refnet.runtime.interrupt), with a real numba kernel
FORWARD_THREAD = PIN + r"""
import threading
import numpy as np
from refnet.runtime.interrupt import run_interruptibly

def job(hook):
    from refnet.kernels import max_pool
    from refnet.kernels._lazyjit import load_numba
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 6)).astype(np.float32)
    got = max_pool(x, (2, 2), (2, 2))
    assert np.array_equal(got, x.reshape(1, 2, 2, 2, 3, 2).max(axis=(3, 5)))
    return load_numba().threading_layer()

print("layer", run_interruptibly(job, threading.Lock()), flush=True)
print("exiting", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity (Linux)")
@pytest.mark.parametrize("code", [USER_THREAD, FORWARD_THREAD], ids=["user-thread", "forward-thread"])
def test_one_cpu_process_exits(code):
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the one-CPU process did not exit within 60 s (numba's TBB start task never ran)")
    assert r.returncode == 0, r.stderr
    assert "exiting" in r.stdout and "layer " in r.stdout
    if "layer tbb" not in r.stdout:
        pytest.skip(f"numba's threading layer is not TBB here ({r.stdout.split()[1]}): the hang cannot happen")
