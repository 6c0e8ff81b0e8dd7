"""Issue 16 cases 3 (Ctrl-C during a long kernel) and 7 (threads).

Ctrl-C: a child runs a forward pass of ~2 x 10^11 additions (an average pooling with a
big window, compute budget lifted) and gets SIGINT once the pass is under way; it must
end with KeyboardInterrupt within a few seconds (it used to run on for minutes).
Threads: public kernels from several threads after set_num_threads(2), beside forward passes,
and many threads x many input shapes on one Net; results against the float64 reference
kernels and NumPy computed here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

CHILD = r"""
import sys, time, numpy as np, refnet
from refnet.net import load_caffe
refnet.set_compute_budget(None)
net = load_caffe(sys.argv[1])
x = np.ones((1, 1, 600, 600), np.float32)
net.forward(x)  # compiles the kernel on a small input first
big = np.ones((1, 1, 2400, 2400), np.float32)
print("start", flush=True)
t0 = time.monotonic()
try:
    net.forward(big)
except KeyboardInterrupt:
    print("interrupted after %.2f s" % (time.monotonic() - t0), flush=True)
    sys.exit(130)
print("finished", flush=True)
"""


def test_ctrl_c_lands_during_a_long_forward(tmp_path):
    proto = tmp_path / "pool.prototxt"
    proto.write_text('name:"p" input:"data" input_shape{dim:1 dim:1 dim:32 dim:32}\n'
                     'layer{name:"pool" type:"Pooling" bottom:"data" top:"pool" '
                     'pooling_param{pool:AVE kernel_size:600 stride:1}}\n')
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(proto)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        line = ""
        deadline = time.monotonic() + 240
        while "start" not in line and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line and p.poll() is not None:
                break
        assert "start" in line, p.stderr.read()
        time.sleep(1.0)  # inside the pooling kernel now (it runs for minutes)
        t_sig = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        waited = time.monotonic() - t_sig
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130 and "interrupted after" in out, out + err
    assert waited < 5.0, f"Ctrl-C took {waited:.1f} s"


def test_kernels_from_threads_beside_forward_passes(tmp_path):
    """After set_num_threads(2): parallel kernels from 4 threads at once and forward passes
    beside them (this aborted the process: numba's workqueue layer is not reentrant)."""
    code = r"""
import threading, numpy as np, refnet
from refnet.kernels import conv2d, conv2d_reference, max_pool
refnet.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 8, 64, 64)).astype(np.float32)
w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
ref = conv2d_reference(x.astype(np.float64), w.astype(np.float64), pad=(1, 1, 1, 1))
pool_ref = x.reshape(1, 8, 32, 2, 32, 2).max(axis=(3, 5))
errs = []
def work():
    for _ in range(30):
        y = conv2d(x, w, pad=(1, 1, 1, 1))
        p = max_pool(x, (2, 2), (2, 2))
        if np.abs(y - ref).max() > 1e-3 * np.abs(ref).max() or not np.array_equal(p, pool_ref):
            errs.append("wrong")
ts = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print("errors", len(errs))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "errors 0" in r.stdout, (r.returncode, r.stderr[-2000:])


def test_many_threads_many_shapes_one_net(tmp_path):
    """16 threads x 12 input shapes on one Net (program cache of 8): no KeyError, and every
    result equals the float64 reference run of the same input, computed single-threaded."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from writers.caffe_writer import Layer, NetSpec, write_net

    import refnet

    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    spec = NetSpec([Layer("c", "Convolution", ["data"], ["c"],
                          {"convolution_param": {"num_output": 4, "kernel_size": 3, "pad": 1, "bias_term": False}},
                          [w]),
                    Layer("r", "ReLU", ["c"], ["r"])], inputs={"data": (1, 3, 8, 9)}, input_style="input_shape")
    net = refnet.load_caffe(*write_net(spec, tmp_path))
    shapes = [(1, 3, 8 + i, 9 + i) for i in range(12)]
    inputs = {s: rng.standard_normal(s).astype(np.float32) for s in shapes}
    from refnet.kernels import conv2d_reference

    want = {s: np.maximum(conv2d_reference(x.astype(np.float64), w.astype(np.float64), pad=(1, 1, 1, 1)), 0)
            for s, x in inputs.items()}
    from conftest import run_threads

    def work(k: int) -> None:
        for j in range(40):
            s = shapes[(k * 7 + j) % len(shapes)]
            got = net.forward(inputs[s])["r"]
            assert np.abs(got - want[s]).max() <= 1e-4 * max(np.abs(want[s]).max(), 1.0)

    errors = run_threads(work, 16)
    assert errors == []



def test_more_blas_threads_than_cores_under_an_address_space_limit(tmp_path):
    """bench --blas-threads 64 under RLIMIT_AS 2 GiB: OpenBLAS started 64 threads with a buffer
    each and the process died of SIGSEGV at its next library load (exit -11). The BLAS count is
    capped at the cores this process may run on (more never helps); the bench ends normally."""
    sys.path.insert(0, os.path.dirname(__file__))
    from harness import GIB, run_cli

    from refnet.runtime.threads import available_cores

    p = tmp_path / "tiny.prototxt"
    p.write_text('name:"t" input:"data" input_shape{dim:1 dim:3 dim:8 dim:8}\n'
                 'layer{name:"r" type:"ReLU" bottom:"data" top:"r"}\n')
    r = run_cli(["bench", str(p), "--blas-threads", "64", "--no-cv2", "--repeat", "1", "--warmup", "0"],
                limit=2 * GIB, timeout=120)
    assert r.rc == 0, f"rc {r.rc}\n{r.stderr[-2000:]}"
    assert f"blas {min(64, available_cores())}," in r.stdout, r.stdout
