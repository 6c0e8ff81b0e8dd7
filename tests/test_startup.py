"""Start-up (issue 17): what a fresh process imports, and the load-path policy.

`import refnet`, `import refnet.kernels` and a first Caffe load import neither numba nor cv2
(checked in fresh interpreters through sys.modules); the pure-Python load path a fresh
process takes gives exactly the graph the compiled scanners give (the compiled path is the
oracle, and the other way round: they are independent implementations); a lazily built
kernel becomes a real numba dispatcher in its module on first call."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from writers.caffe_writer import E, Layer, NetSpec, write_net

from refnet.weights_import import _scanpolicy


def _fresh(code: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def small_net(tmp_path):
    rng = np.random.default_rng(3)
    spec = NetSpec([
        Layer("c1", "Convolution", ["data"], ["c1"],
              {"convolution_param": {"num_output": 4, "kernel_size": 3, "pad": 1}},
              [rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), rng.normal(0, 0.1, 4).astype(np.float32)]),
        Layer("r", "ReLU", ["c1"], ["c1"]),
        Layer("p", "Pooling", ["c1"], ["p"], {"pooling_param": {"pool": E("MAX"), "kernel_size": 2, "stride": 2}}),
        Layer("fc", "InnerProduct", ["p"], ["fc"], {"inner_product_param": {"num_output": 3}},
              [rng.normal(0, 0.3, (3, 4 * 4 * 4)).astype(np.float32), np.zeros(3, np.float32)]),
    ], {"data": (1, 3, 8, 8)})
    return write_net(spec, tmp_path)


def test_import_and_first_load_import_no_numba_no_cv2(small_net):
    got = _fresh(
        "import json, sys, refnet, refnet.kernels\n"
        "a = sorted(m for m in ('numba', 'cv2', 'scipy', 'llvmlite') if m in sys.modules)\n"
        f"net = refnet.load({str(small_net[0])!r}, {str(small_net[1])!r})\n"
        "b = sorted(m for m in ('numba', 'cv2', 'scipy', 'llvmlite') if m in sys.modules)\n"
        "print(json.dumps([a, b, list(net.layer_names)]))\n")
    assert got == [[], [], ["c1", "r", "p", "fc"]]


def test_forward_loads_numba_but_not_scipy_linalg(small_net):
    """numba's np.dot BLAS probe (an import of scipy.linalg) is skipped: the forward runs
    without scipy, and gives the float64 reference path's numbers (the oracle here)."""
    got = _fresh(
        "import json, sys, numpy as np, refnet\n"
        f"net = refnet.load({str(small_net[0])!r}, {str(small_net[1])!r})\n"
        "x = np.random.default_rng(0).uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)\n"
        "y = net.forward(x)['fc']; r = net.forward(x, precision='float64')['fc']\n"
        "print(json.dumps(['numba' in sys.modules, 'scipy.linalg' in sys.modules, float(np.abs(y - r).max()),"
        " float(np.abs(r).max())]))\n")
    numba_loaded, scipy_loaded, err, scale = got
    assert numba_loaded and not scipy_loaded
    assert err <= 1e-5 * scale


def test_python_and_compiled_load_paths_agree(small_net, monkeypatch):
    """The same files through the compiled scanners (policy forced on) and through the Python
    parsers (forced off): the same layers, attributes and weight arrays, bit for bit."""
    import refnet.weights_import.caffe as C
    import refnet.weights_import.prototxt as P
    from refnet.weights_import.caffe import read_caffe

    def graph(compiled: bool):
        for mod in (C, P):
            monkeypatch.setattr(mod, "compiled_scan_pays", lambda n, python_from=None: compiled)
        return read_caffe(*small_net)

    fast, slow = graph(True), graph(False)
    assert [(n.name, n.op, n.inputs, n.outputs) for n in fast.nodes] == \
           [(n.name, n.op, n.inputs, n.outputs) for n in slow.nodes]
    for a, b in zip(fast.nodes, slow.nodes):
        assert dict(a.attrs) == dict(b.attrs)
        assert sorted(a.params) == sorted(b.params)
        for k in a.params:
            assert a.params[k].dtype == b.params[k].dtype
            np.testing.assert_array_equal(a.params[k], b.params[k])


def test_policy_switches_after_the_python_budget(monkeypatch):
    monkeypatch.setattr(_scanpolicy, "_SPENT", [0.0])
    monkeypatch.setattr(_scanpolicy, "_numba_loaded", lambda: True)
    assert _scanpolicy.compiled_scan_pays(10)  # numba loaded anyway: the compiled scanners
    monkeypatch.setattr(_scanpolicy, "_numba_loaded", lambda: False)
    assert not _scanpolicy.compiled_scan_pays(10)
    assert _scanpolicy.compiled_scan_pays(_scanpolicy.TEXT_COMPILED_FROM, _scanpolicy.TEXT_COMPILED_FROM)  # too large
    _scanpolicy.spent_in_python(_scanpolicy.PYTHON_BUDGET_S / 2)
    assert not _scanpolicy.compiled_scan_pays(10)
    _scanpolicy.spent_in_python(_scanpolicy.PYTHON_BUDGET_S / 2)
    assert _scanpolicy.compiled_scan_pays(10)  # the Python paths had their budget


def test_lazy_kernel_becomes_a_numba_dispatcher():
    """A lazy kernel that calls another lazy kernel in a prange loop: built on the first call,
    then the module's name holds numba's dispatcher; the numbers are NumPy's."""
    import types

    import numba

    from refnet.kernels._lazyjit import LazyDispatcher

    mod = types.ModuleType("lazy_demo")
    exec(  # noqa: S102 - a test module's source
        "from refnet.kernels._lazyjit import lazy_njit, prange\n"
        "@lazy_njit()\n"
        "def sq(v):\n"
        "    return v * v\n"
        "@lazy_njit(parallel=True)\n"
        "def rowsum_sq(a, out):\n"
        "    for i in prange(a.shape[0]):\n"
        "        s = 0.0\n"
        "        for j in range(a.shape[1]):\n"
        "            s += sq(a[i, j])\n"
        "        out[i] = s\n", mod.__dict__)
    assert isinstance(mod.rowsum_sq, LazyDispatcher) and isinstance(mod.sq, LazyDispatcher)
    a = np.random.default_rng(0).normal(size=(6, 5))
    out = np.empty(6)
    mod.rowsum_sq(a, out)
    np.testing.assert_allclose(out, (a * a).sum(axis=1), rtol=1e-13)
    assert isinstance(mod.rowsum_sq, numba.core.registry.CPUDispatcher)
    assert mod.prange is numba.prange  # swapped before compiling: a real parallel loop


def test_small_forward_needs_no_numba_and_gives_numbas_numbers(small_net):
    """A small net's float32 forward runs the NumPy twins: numba is never imported, and the
    output is bit for bit what the numba kernels give (REFNET_NUMPY_MAX_MACS=0: the oracle)."""
    import os

    code = (
        "import json, sys, numpy as np, refnet\n"
        "refnet.set_num_threads(1)\n"
        f"net = refnet.load({str(small_net[0])!r}, {str(small_net[1])!r})\n"
        "x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)\n"
        "y = net.forward(x)['fc']\n"
        "print(json.dumps(['numba' in sys.modules, 'llvmlite' in sys.modules, y.tobytes().hex()]))\n")
    outs = []
    for limit in ("", "0"):
        env = dict(os.environ, REFNET_NUMPY_MAX_MACS=limit)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr
        outs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    (numba_a, llvm_a, y_a), (numba_b, _, y_b) = outs
    assert not numba_a and not llvm_a and numba_b
    assert y_a == y_b


class _Prog:
    def __init__(self, work: int) -> None:
        self.work = work


def test_small_net_policy(monkeypatch):
    """Under SMALL_WORK MACs: the twins while their passes took less than NUMPY_CPU_BUDGET_S of
    CPU; up to NUMPY_MAX_WORK: the same while numba is not loaded; above: numba. (The CPU clock
    is a fake one: each twin pass takes 0.4 s.)"""
    from refnet.kernels._lazyjit import numpy_kernels_on
    from refnet.runtime import smallnet as S

    clock = [0.0]

    def mode(prog: _Prog) -> bool:
        with S.kernels_for(prog):
            on = numpy_kernels_on()
            clock[0] += 0.4
            return on

    monkeypatch.delenv("REFNET_NUMPY_MAX_MACS", raising=False)
    monkeypatch.setattr(S.time, "thread_time", lambda: clock[0])
    monkeypatch.setattr(S, "_SPENT", [0.0])
    monkeypatch.setattr(S, "numba_loaded", lambda: False)
    monkeypatch.setattr(S, "NUMPY_CPU_BUDGET_S", 1.0)
    small, big = _Prog(S.SMALL_WORK - 1), _Prog(S.NUMPY_MAX_WORK)
    assert mode(small) and not mode(big)
    assert S.numpy_phase_spent() == pytest.approx(0.4)  # a small program's twin pass is counted, a big one runs numba
    mid = [_Prog(S.NUMPY_MAX_WORK - 1) for _ in range(2)]
    assert mode(mid[0]) and mode(mid[1])  # 0.4, 0.8 s spent before each: the twins
    assert S.numpy_phase_spent() == pytest.approx(1.2)
    assert not mode(mid[0]) and not mode(mid[1]) and not mode(small)  # the budget is spent: numba
    monkeypatch.setattr(S, "_SPENT", [0.0])
    monkeypatch.setattr(S, "numba_loaded", lambda: True)  # numba already paid for: mid-sized ones use it
    assert mode(small) and not mode(_Prog(S.SMALL_WORK)) and not mode(mid[0])
    assert mode(small) and mode(small) and not mode(small)  # small ones after the budget (0.4, 0.8, 1.2 s)
    monkeypatch.setattr(S, "_SPENT", [0.0])
    S.end_numpy_phase()  # a benchmark's steady state: numba for every program
    assert not mode(small)
    monkeypatch.setenv("REFNET_NUMPY_MAX_MACS", "0")
    assert not mode(_Prog(0))
    assert not numpy_kernels_on()


def test_thread_count_reaches_numba_when_it_loads():
    """set_num_threads before anything needed numba does not import it; numba gets the count
    when it loads."""
    got = _fresh(
        "import json, sys, refnet\n"
        "n = refnet.set_num_threads(1)\n"
        "a = 'numba' in sys.modules\n"
        "from refnet.kernels._lazyjit import load_numba\n"
        "numba = load_numba()\n"
        "print(json.dumps([n, a, numba.get_num_threads(), refnet.get_num_threads()['numba']]))\n")
    assert got == [1, False, 1, 1]
