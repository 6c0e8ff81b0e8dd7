"""Issue 16 cases 1 and 8: where numba's cache goes, refusing unsafe folders, corrupt caches.

The real read-only install (venv, read-only site-packages, a user without a home) is
tests/attack/readonly_install.sh (`make attack-readonly`); here the choice is simulated with
environments, and a numba kernel (max pooling) runs in child processes against NumPy.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from refnet.kernels._cache import check_private_dir, choose_cache_dir, package_stamp

KERNEL = r"""
import numpy as np
from refnet.kernels import max_pool
x = np.random.default_rng(0).standard_normal((2, 3, 8, 10)).astype(np.float32)
got = max_pool(x, (2, 2), (2, 2))   # a numba kernel; oracle: NumPy's max over 2x2 blocks
assert np.array_equal(got, x.reshape(2, 3, 4, 2, 5, 2).max(axis=(3, 5)))
print("ok")
"""


def _run(env: dict) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "REFNET_NUMBA_CACHE")}
    e.update(env)
    return subprocess.run([sys.executable, "-c", KERNEL], env=e, capture_output=True, text=True, timeout=300)


def test_default_is_private_under_xdg(tmp_path):
    c = choose_cache_dir({"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert c.path == str(tmp_path / "xdg" / "refnet" / "numba") and c.note is None
    assert stat.S_IMODE(os.stat(c.path).st_mode) == 0o700
    c = choose_cache_dir({"HOME": str(tmp_path / "home")})
    assert c.path == str(tmp_path / "home" / ".cache" / "refnet" / "numba") and c.note is None


def test_explicit_dir_wins_and_refnet_variable_first(tmp_path):
    c = choose_cache_dir({"REFNET_NUMBA_CACHE": str(tmp_path / "a"), "NUMBA_CACHE_DIR": str(tmp_path / "b"),
                          "HOME": str(tmp_path)})
    assert c.path == str(tmp_path / "a") and c.note is None
    assert choose_cache_dir({"NUMBA_CACHE_DIR": str(tmp_path / "b")}).path == str(tmp_path / "b")


@pytest.mark.parametrize("problem", ["file", "others-writable", "group-writable", "foreign-owner", "no-home"])
def test_unsafe_or_unusable_dirs_fall_back_with_one_line(tmp_path, problem):
    d = tmp_path / "cache"
    env = {"NUMBA_CACHE_DIR": str(d)}
    if problem == "file":
        d.write_text("x")
        why = "is not a directory"
    elif problem in ("others-writable", "group-writable"):
        d.mkdir()
        os.chmod(d, 0o777 if problem == "others-writable" else 0o770)
        why = "writable by others"
    elif problem == "foreign-owner":
        if os.getuid() != 0:
            pytest.skip("chown to another user needs root")
        d.mkdir(mode=0o700)
        os.chown(d, 4242, -1)
        why = "owned by uid 4242"
    else:
        env = {}
        why = "no home folder"
    c = choose_cache_dir(env)
    assert c.path is not None and c.path != str(d) and c.note is not None
    assert why in c.note and c.path in c.note and "\n" not in c.note
    assert check_private_dir(c.path, create=False) is None


def test_import_never_fails_on_a_bad_cache_dir_and_kernels_run(tmp_path):
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    r = _run({"NUMBA_CACHE_DIR": str(f)})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert any("is not a directory" in x for x in lines) and not any("Traceback" in x for x in lines)


TINY = r"""
import importlib.util, sys
import numpy as np
# a one-line kernel compiled with refnet's jit options, in a module named like refnet's own
spec = importlib.util.spec_from_file_location("refnet._attack_cachetest", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod  # numba rebuilds cached functions by module name
spec.loader.exec_module(mod)
x = np.arange(5.0)
assert np.array_equal(mod.axpb(x), 3.0 * x + 1.0)
print("misses", sum(mod.axpb.stats.cache_misses.values()))
"""


def _run_tiny(env: dict, src: Path) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "REFNET_NUMBA_CACHE")}
    e.update(env)
    return subprocess.run([sys.executable, "-c", TINY, str(src)], env=e, capture_output=True, text=True, timeout=300)


def test_corrupt_cache_recompiles_instead_of_failing(tmp_path):
    src = tmp_path / "cachetest.py"
    src.write_text("from refnet.kernels._jit import jit\n\n\n@jit\ndef axpb(x):\n    return 3.0 * x + 1.0\n")
    env = {"REFNET_NUMBA_CACHE": str(tmp_path / "private")}
    r1 = _run_tiny(env, src)
    assert r1.returncode == 0 and "misses 1" in r1.stdout, r1.stderr
    assert "compiling kernels (first run only)" in r1.stderr  # a compile really happened: the notice
    files = {p.suffix: p for p in (tmp_path / "private").rglob("*") if p.suffix in (".nbi", ".nbc")}
    assert set(files) == {".nbi", ".nbc"}
    # 1. a valid index pointing at a garbled data file; 2. a truncated index: each read is a miss,
    # the kernel recompiles and the entry is rewritten
    for suffix, garble in ((".nbc", lambda d: bytes(b ^ 0x5A for b in d)), (".nbi", lambda d: d[: len(d) // 2])):
        p = [q for q in (tmp_path / "private").rglob("*") if q.suffix == suffix][0]
        p.write_bytes(garble(p.read_bytes()))
        r = _run_tiny(env, src)
        assert r.returncode == 0 and "misses 1" in r.stdout and "compiling kernels" in r.stderr, r.stderr
    r = _run_tiny(env, src)  # rewritten: a hit again
    assert r.returncode == 0 and "misses 0" in r.stdout, r.stderr


def test_package_stamp_follows_every_python_file(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("n")
    s0 = package_stamp(str(tmp_path))
    assert s0 == package_stamp(str(tmp_path)) and len(s0) == 20
    st = os.stat(tmp_path / "b.py")
    os.utime(tmp_path / "b.py", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # b.py edited, same size
    s1 = package_stamp(str(tmp_path))
    assert s1 != s0
    os.utime(tmp_path / "b.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert package_stamp(str(tmp_path)) == s0
    (tmp_path / "notes.txt").write_text("longer")  # not a source file
    assert package_stamp(str(tmp_path)) == s0
    (tmp_path / "c.py").write_text("")  # a new module
    assert package_stamp(str(tmp_path)) not in (s0, s1)
    assert package_stamp(str(tmp_path / "missing")) == ""


def test_a_change_anywhere_in_the_kernel_package_recompiles(tmp_path):
    """A cached kernel is fresh only while the whole package is unchanged: its jitted callees
    from other files are compiled into it (numba itself checks the kernel's own file only)."""
    env = {"REFNET_NUMBA_CACHE": str(tmp_path / "cache")}
    first, warm = _run(env), _run(env)
    assert first.returncode == 0 and "compiling kernels" in first.stderr, first.stderr
    assert warm.returncode == 0 and "compiling kernels" not in warm.stderr, warm.stderr  # stable stamp
    other = "import refnet.kernels._cache as c\nc.kernels_stamp = lambda: 'another package'\n" + KERNEL
    e = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "REFNET_NUMBA_CACHE")}
    r = subprocess.run([sys.executable, "-c", other], env={**e, **env}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert "compiling kernels" in r.stderr  # the same kernel file, another package state: a miss


def test_makefile_sets_no_other_cache_dir():
    make = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert "NUMBA_CACHE_DIR" not in make.replace("# ", "")
