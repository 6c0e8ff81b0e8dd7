"""Thread control (refnet/runtime/threads.py) and fair timing / busy neighbour in refnet.bench.

The thread limits are checked with threadpoolctl's own report of every loaded BLAS (the
oracle); the default thread count against hand-computed cases of its rule; the fair timer by
the order of the calls it makes. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from writers.caffe_writer import Layer, NetSpec, write_net

import refnet
from refnet.bench import alternate, busy_neighbour
from refnet.cli import main
from refnet.runtime import threads as T


@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(1)
    spec = NetSpec([
        Layer("c1", "Convolution", ["data"], ["c1"], {"convolution_param": {"num_output": 4, "kernel_size": 3}},
              [rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), np.zeros(4, np.float32)]),
        Layer("fc", "InnerProduct", ["c1"], ["fc"], {"inner_product_param": {"num_output": 3}},
              [rng.normal(0, 0.3, (3, 4 * 6 * 6)).astype(np.float32), np.zeros(3, np.float32)]),
    ], {"data": (1, 3, 8, 8)})
    return write_net(spec, tmp_path)


pytestmark = pytest.mark.usefixtures("restore_threads")  # (tests/conftest.py)


def test_blas_limit_reaches_a_blas_loaded_after_it(tiny):
    """set_num_threads(1), then scipy's own OpenBLAS is loaded, then a model: every BLAS that
    threadpoolctl finds runs one thread (before the fix scipy's stayed at the core count)."""
    code = (
        "import json, sys, refnet\n"
        "from threadpoolctl import threadpool_info\n"
        "refnet.set_num_threads(1)\n"
        "before = len([d for d in threadpool_info() if d['user_api'] == 'blas'])\n"
        "import scipy.linalg\n"
        f"net = refnet.load({str(tiny[0])!r}, {str(tiny[1])!r})\n"
        "after_load = [d['num_threads'] for d in threadpool_info() if d['user_api'] == 'blas']\n"
        "import numpy as np\n"
        "net.forward(np.ones((1, 3, 8, 8), np.float32))\n"
        "after_run = [d['num_threads'] for d in threadpool_info() if d['user_api'] == 'blas']\n"
        "print(json.dumps([before, after_load, after_run]))\n"
    )
    env = dict(os.environ, OPENBLAS_NUM_THREADS="", OMP_NUM_THREADS="")
    env.pop("OPENBLAS_NUM_THREADS")
    env.pop("OMP_NUM_THREADS")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    before, after_load, after_run = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(after_load) > before >= 1  # scipy brought a BLAS of its own after set_num_threads
    assert after_load == [1] * len(after_load) and after_run == [1] * len(after_run)


@pytest.mark.parametrize("cores,machine,others,want", [
    (2, 2, 0, 2), (2, 2, 1, 1), (2, 2, 5, 1), (8, 8, 3, 5), (4, 4, None, 4),
    (4, 64, 32, 2),  # 4 of 64 cores (a container's cpuset): 32 running elsewhere ~ 2 on ours
    (2, 64, 10, 2),  # 10 running on a 64-core host: ~0.3 of them on our 2 cores
])
def test_auto_threads_rule(monkeypatch, cores, machine, others, want):
    monkeypatch.setattr(T, "available_cores", lambda: cores)
    monkeypatch.setattr(T.os, "cpu_count", lambda: machine)
    monkeypatch.setattr(T, "_others_running", lambda: others)
    monkeypatch.setattr(T, "_others_lately", lambda: None)  # the snapshot rule alone
    assert T.auto_threads() == want


@pytest.mark.parametrize("cores,machine,now,lately,current,want", [
    (2, 2, 0, None, None, 2), (2, 2, 0, 0.0, 2, 2), (2, 2, 1, 0.0, 2, 1),
    (2, 2, 0, 0.5, 2, 1),  # a neighbour that comes and goes: not running at the look, half a core lately
    (2, 2, 0, 0.2, 2, 2),  # under TAKEN_ABOVE: the core stays ours
    (2, 2, 0, 0.2, 1, 1),  # ... but not clearly free either: no thread added back (hysteresis)
    (2, 2, 0, 0.05, 1, 2),  # under FREE_BELOW: added back
    (2, 2, 0, 3.0, 2, 1),  # oversubscribed: at least one thread
    (8, 8, 0, 2.6, 8, 5), (8, 8, 4, 2.6, 8, 4),  # the larger of the two readings counts
    (8, 8, 0, 2.2, 5, 5),  # 2.2 - 0.1 -> 3 cores not clearly free: stays at 5 (not 6)
    (4, 64, 0, 32.0, 4, 2),  # 4 of 64 cores: 32 cores busy elsewhere ~ 2 of ours
])
def test_decide_rule(cores, machine, now, lately, current, want):
    assert T.decide(cores, machine, now, lately, current) == want


def test_others_lately_from_fake_proc_stat(monkeypatch):
    """Cores used by others = machine busy core-seconds - own CPU seconds, over the window."""
    snaps = iter([(100.0, 10.0, 50.0), (100.8, 10.5, 50.5), (101.0, 10.5, 50.55), (101.7, 10.6, 51.5)])
    monkeypatch.setattr(T, "_cpu_snapshot", lambda: next(snaps))
    monkeypatch.setitem(T._LATELY, "snap", None)
    monkeypatch.setitem(T._LATELY, "avg", None)
    assert T._others_lately() is None  # first look: no window yet
    assert T._others_lately() == pytest.approx((0.8 - 0.5) / 0.5)
    assert T._others_lately() == pytest.approx(0.6)  # 50 ms window: too short, the previous average
    assert T._others_lately() == pytest.approx((0.9 - 0.1) / 1.0)  # window from the kept snapshot at 50.5


def test_auto_mode_neighbour_seen_lately_not_now(monkeypatch):
    """A neighbour that was not running at the look but used ~0.7 core since: one thread, and
    the decision is recorded with what it saw."""
    monkeypatch.setattr(T, "available_cores", lambda: 2)
    monkeypatch.setattr(T.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(T, "_others_running", lambda: 0)
    monkeypatch.setattr(T, "_others_lately", lambda: 0.7)
    assert T.set_num_threads("auto") == 1
    assert T.decisions()[-1] == (1, 0, 0.7)
    monkeypatch.setattr(T, "_others_lately", lambda: 0.0)
    assert T.before_forward(force=True) == 2


def test_cpu_snapshot_reads_proc():
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat")
    busy, own, _ = T._cpu_snapshot()
    assert busy >= 0 and own >= 0


def test_others_running_reads_proc():
    if not os.path.exists("/proc/loadavg"):
        pytest.skip("no /proc/loadavg")
    assert T._others_running() >= 0
    assert 1 <= T._own_running() <= len(os.listdir("/proc/self/task"))


def test_auto_mode_applies_counts_to_numba_and_blas(tiny, monkeypatch):
    from threadpoolctl import threadpool_info

    net = refnet.load(*tiny)
    monkeypatch.setattr(T, "auto_threads", lambda: 1)
    T.set_num_threads("auto")
    x = np.ones((1, 3, 8, 8), np.float32)
    y1 = net.forward(x)["fc"]
    assert T.mode() == "auto" and T.get_num_threads()["numba"] == 1
    assert all(d["num_threads"] == 1 for d in threadpool_info() if d["user_api"] == "blas")
    monkeypatch.setattr(T, "auto_threads", lambda: 2)
    monkeypatch.setattr(T, "AUTO_MIN_WORK", 0)  # the tiny net counts as large enough to share
    T._STATE["checked"] = -1e9  # the next forward looks at the load again
    y2 = net.forward(x)["fc"]
    import numba

    assert T.get_num_threads()["numba"] == min(2, numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(y1, y2)  # thread count never changes the numbers
    with pytest.raises(ValueError):
        T.set_num_threads("many")


def test_fair_alternate_order():
    """Each timed call follows its engine's set-up, a pause and an untimed call of the same engine."""
    order: list[str] = []
    times = alternate([lambda: order.append("a"), lambda: order.append("b")], repeat=2, warmup=0, pause=0.001,
                      warm_each=True, prepare=[lambda: order.append("pa"), lambda: order.append("pb")])
    assert order == ["pa", "a", "a", "pb", "b", "b"] * 2
    assert [len(t) for t in times] == [2, 2]


def test_busy_neighbour_runs_and_stops():
    with busy_neighbour(30) as pid:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        assert state in "RS"  # alive (running, or waiting for the core)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_memory_neighbour_streams_its_arrays_and_stops():
    """The memory neighbour holds its two arrays (resident: it touches them) and keeps running."""
    from refnet.bench import MEMORY_NEIGHBOUR_MIB

    with busy_neighbour(30, kind="memory") as pid:
        deadline = time.monotonic() + 20
        while _rss_mib(pid) < 2 * MEMORY_NEIGHBOUR_MIB and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _rss_mib(pid) >= 2 * MEMORY_NEIGHBOUR_MIB
        with open(f"/proc/{pid}/stat") as f:
            cpu0 = sum(map(int, f.read().rsplit(")", 1)[1].split()[11:13]))
        time.sleep(0.3)
        with open(f"/proc/{pid}/stat") as f:
            assert sum(map(int, f.read().rsplit(")", 1)[1].split()[11:13])) > cpu0  # still copying
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    with pytest.raises(ValueError, match="unknown neighbour kind"):
        with busy_neighbour(1, kind="disk"):
            pass


def test_bench_command_memory_neighbour(tiny, tmp_path, capsys):
    out = tmp_path / "b.json"
    argv = ["bench", str(tiny[0]), str(tiny[1]), "--busy-neighbour", "memory", "--repeat", "2", "--warmup", "1",
            "--pause", "0.01", "--json", str(out)]
    assert main(argv) == 0
    assert "memory-streaming neighbour" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["busy_neighbour"] is True and data["neighbour_kind"] == "memory"


def test_bench_command_auto_one_thread_neighbour(tiny, tmp_path, capsys):
    out = tmp_path / "b.json"
    argv = ["bench", str(tiny[0]), str(tiny[1]), "--threads", "auto", "--one-thread", "--busy-neighbour",
            "--repeat", "2", "--warmup", "1", "--pause", "0.01", "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "refnet 1t" in text and "spinning neighbour" in text and "pause" in text
    data = json.loads(out.read_text())
    assert data["busy_neighbour"] is True and data["neighbour_kind"] == "spin"
    assert len(data["refnet_1t_runs_ms"]) == 2 and len(data["cv2_runs_ms"]) == 2
    assert data["ratio_vs_one_thread"] == pytest.approx(data["refnet_ms"] / data["refnet_1t_ms"])
    assert "load average" in text and "refnet's default chose" in text and len(data["load"]) == 2
    # one decision per timed refnet call at least (its set-up looks again), each within the cores
    assert sum(data["auto_threads"].values()) >= 2 and all(1 <= int(k) <= os.cpu_count() for k in data["auto_threads"])
    assert main(["bench", str(tiny[0]), str(tiny[1]), "--threads", "zero"]) == 2
    assert main(["bench", str(tiny[0]), str(tiny[1]), "--pause", "-1"]) == 2


def test_paired_ratio_by_hand():
    from refnet.bench import BenchResult

    assert BenchResult.paired([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0  # median of 2, 2, 3
    assert BenchResult.paired([1.0], [0.0]) is None


def test_others_running_subtracts_the_smaller_own_count(monkeypatch):
    """Own threads counted before and after the machine's count: the smaller is subtracted
    (an own thread waking up in between must not hide a neighbour)."""
    import io

    own = iter([1, 2] * 3)  # one own thread running at the first look, two at the second
    monkeypatch.setattr(T, "_own_running", lambda: next(own))
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: io.BytesIO(b"0.5 0.4 0.3 3/120 999\n")
                        if p == "/proc/loadavg" else real_open(p, *a, **k))
    monkeypatch.setattr(T.time, "sleep", lambda s: None)
    assert T._others_running() == 2  # 3 running - min(1, 2) own


@pytest.mark.parametrize("mode", [1, "auto"])
def test_forward_thread_gets_numba_count(tiny, monkeypatch, mode):
    """A heavy forward pass runs in its own new thread (runtime.interrupt), where numba's
    per-thread count starts at NUMBA_NUM_THREADS: refnet's count must reach it (it did not:
    numba ran on every core at "1 thread")."""
    import threading

    import numba

    import refnet.runtime.program as PG

    monkeypatch.setattr(PG, "THREAD_MIN_WORK", 0)  # the tiny net takes the heavy nets' path
    monkeypatch.setattr(T, "auto_threads", lambda: 1)
    seen = []
    real = PG.before_forward

    def probe(*a, **k):
        r = real(*a, **k)
        seen.append((threading.current_thread() is threading.main_thread(), r, numba.get_num_threads()))
        return r

    monkeypatch.setattr(PG, "before_forward", probe)
    net = refnet.load(*tiny)
    T.set_num_threads(mode)
    for _ in range(2):
        net.forward(np.ones((1, 3, 8, 8), np.float32))
    want = 1  # explicit or auto (one thread chosen): numba at one thread too, in the pass's own thread
    assert seen and all(not main and r == want and n == want for main, r, n in seen)
    assert T.get_num_threads()["numba"] == 1 and T.get_num_threads()["gemm"] == 1  # the calling thread's


def test_auto_mode_small_pass_runs_one_thread(tiny, monkeypatch):
    """A pass under AUTO_MIN_WORK MACs runs one thread (GEMM pool and numba in the running
    thread) while the load allows two; the load decision stays (it is what a larger pass gets),
    the pass is counted, and the numbers are those of the two-thread pass."""
    monkeypatch.setattr(T, "auto_threads", lambda: 2)
    monkeypatch.setattr(T, "_numba_here", lambda n: n)  # (numba's count: the test above)
    from refnet.kernels import _workers

    net = refnet.load(*tiny)
    x = np.ones((1, 3, 8, 8), np.float32)
    T.set_num_threads("auto")
    monkeypatch.setattr(T, "AUTO_MIN_WORK", 0)
    y2 = net.forward(x)["fc"]
    assert _workers.workers() == (2 if _workers.enabled() else 1)
    monkeypatch.setattr(T, "AUTO_MIN_WORK", 10**12)
    before = T.small_passes()
    y1 = net.forward(x)["fc"]
    assert T.small_passes() == before + 1 and _workers.workers() == 1 and T._STATE["auto_n"] == 2
    assert T.before_forward(work=10**11) == 1 and T.before_forward(work=10**12) == 2
    np.testing.assert_array_equal(y1, y2)
    assert [T.for_work(2, w) for w in (None, 0, 10**12 - 1, 10**12)] == [2, 1, 1, 2]


def test_bench_command_reports_small_passes(tiny, tmp_path, capsys, monkeypatch):
    """With the load allowing two threads, the tiny net's passes (under AUTO_MIN_WORK) run one
    thread, and `refnet bench --threads auto` says how many did (in its table and JSON)."""
    monkeypatch.setattr(T, "auto_threads", lambda: 2)
    out = tmp_path / "b.json"
    argv = ["bench", str(tiny[0]), str(tiny[1]), "--threads", "auto", "--no-cv2", "--repeat", "2", "--warmup", "1",
            "--pause", "0.01", "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["auto_small"] >= 2 and f"ran {data['auto_small']} passes on one thread" in text


def test_heavy_passes_share_one_forward_thread(tiny, monkeypatch):
    """Heavy forward passes (runtime.interrupt) run in one long-lived worker thread, not a new
    thread per pass (per-thread scratch, numba and TBB state set up once); an exception in a pass
    reaches the caller and the worker serves the next pass. Outputs against NumPy float64."""
    import threading

    import refnet.runtime.interrupt as I
    import refnet.runtime.program as PG

    monkeypatch.setattr(PG, "THREAD_MIN_WORK", 0)  # the tiny net takes the heavy nets' path
    monkeypatch.setattr(I, "PERSISTENT", True)
    seen = []
    real = PG.before_forward

    def probe(*a, **k):
        seen.append(threading.get_ident())
        return real(*a, **k)

    monkeypatch.setattr(PG, "before_forward", probe)
    net = refnet.load(*tiny)
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    outs = [net.forward(x) for _ in range(3)]
    assert len(seen) == 3 and len(set(seen)) == 1 and seen[0] != threading.main_thread().ident

    def boom(hook):
        raise ValueError("in the pass")

    with pytest.raises(ValueError, match="in the pass"):
        I.run_interruptibly(boom, threading.Lock())
    assert I.run_interruptibly(lambda hook: threading.get_ident(), threading.Lock()) == seen[0]

    # oracle: the tiny net (3x3 valid conv, 4 outputs, zero bias; inner product) in float64
    rng = np.random.default_rng(1)
    w1 = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32).astype(np.float64)
    w2 = rng.normal(0, 0.3, (3, 4 * 6 * 6)).astype(np.float32).astype(np.float64)
    xd = x.astype(np.float64)[0]
    c1 = np.zeros((4, 6, 6))
    for i in range(6):
        for j in range(6):
            c1[:, i, j] = np.tensordot(w1, xd[:, i : i + 3, j : j + 3], axes=3)
    want = w2 @ c1.reshape(-1)
    for out in outs:
        got = out["fc"] if isinstance(out, dict) else out
        np.testing.assert_allclose(np.asarray(got, np.float64).reshape(-1), want, rtol=1e-4, atol=1e-5)
