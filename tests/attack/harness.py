"""Run a refnet command in a child process under an address-space limit; report exit status,
stderr, peak RSS (the high-water mark of the child's own address space) and wall time.

Used by tests/attack/ (every attack case as a regression test) and by measure.py (the
before/after table). The child runs ``refnet.cli.main(argv)`` with RLIMIT_AS set first, so
the default memory budget (min(half the available memory, what is left of RLIMIT_AS)) is
derived from the limit, as on a memory-limited machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

GIB = 1 << 30
# A child's peak RSS is the high-water mark of its own address space (/proc/self/status VmHWM), written
# at exit to $REFNET_ATTACK_HWM: the ru_maxrss that wait4 reports also holds the memory the parent had
# mapped when it forked the child (the kernel folds the old address space's mark in at exec), so a
# test process grown to 3 GB by earlier tests made every child report 3 GB. (A child killed before its
# exit falls back to ru_maxrss.)
_HWM = r"""
import atexit, os
def _hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return -1.0
if os.environ.get("REFNET_ATTACK_HWM"):
    atexit.register(lambda: open(os.environ["REFNET_ATTACK_HWM"], "w").write(str(_hwm())))
"""
CHILD = _HWM + r"""
import resource, sys
lim = int(sys.argv[1])
if lim > 0:
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
from refnet.cli import main
sys.exit(main(sys.argv[2:]))
"""


CHILD_MANY = _HWM + r"""
import contextlib, io, json, resource, sys, time
lim = int(sys.argv[1])
if lim > 0:
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
from refnet.cli import main
for argv in json.loads(sys.argv[2]):
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
    peak = _hwm()
    print(json.dumps({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "peak_mib": peak,
                      "seconds": time.monotonic() - t0}), flush=True)
"""


@dataclass
class Result:
    rc: int  # exit status, or -signal
    stdout: str
    stderr: str
    peak_mib: float
    seconds: float
    timed_out: bool = False

    @property
    def one_line_error(self) -> bool:
        """stderr ends in exactly one ``refnet: error:`` line and shows no traceback."""
        lines = [x for x in self.stderr.splitlines() if x.strip()]
        errors = [x for x in lines if x.startswith("refnet: error: ")]
        return (len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in self.stderr)


def run_cli(argv: list[str], *, limit: int = 2 * GIB, timeout: float = 60.0, env: dict | None = None,
            cwd: str | os.PathLike | None = None, python: str = sys.executable,
            user: int | None = None) -> Result:
    """``refnet argv`` in a child under RLIMIT_AS ``limit`` (0: none); killed after ``timeout`` s."""
    e = dict(os.environ)
    e.update(env or {})
    e.setdefault("REFNET_MODELS", os.environ.get("REFNET_MODELS", ""))
    pre = None
    if user is not None:
        def pre() -> None:  # drop to an unprivileged user (permission tests run as root in CI)
            os.setgid(user)
            os.setuid(user)
    out_r, err_r, hwm_r = (Path(os.environ.get("TMPDIR", "/tmp")) / f"refnet-attack-{os.getpid()}-{n}" for n in "oeh")
    hwm_r.unlink(missing_ok=True)
    e["REFNET_ATTACK_HWM"] = str(hwm_r)
    t0 = time.monotonic()
    with open(out_r, "w+") as fo, open(err_r, "w+") as fe:
        p = subprocess.Popen([python, "-c", CHILD, str(limit), *argv], stdout=fo, stderr=fe, env=e,
                             cwd=cwd, preexec_fn=pre)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                p.send_signal(signal.SIGKILL)
                timed_out = True
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.02)
        p.returncode = os.waitstatus_to_exitcode(status)
        secs = time.monotonic() - t0
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    for f in (out_r, err_r):
        f.unlink()
    try:
        peak = float(hwm_r.read_text())
        hwm_r.unlink()
    except (OSError, ValueError):  # killed before its exit: the rusage mark (see _HWM)
        peak = usage.ru_maxrss / 1024
    return Result(p.returncode, out, err, peak, secs, timed_out)


def run_cli_many(argvs: list[list[str]], *, limit: int = 2 * GIB, timeout: float = 120.0,
                 cwd: str | os.PathLike | None = None, python: str = sys.executable) -> list[Result]:
    """Several ``refnet`` commands, one after the other in ONE child under RLIMIT_AS ``limit``
    (one interpreter start instead of one per case). ``peak_mib`` of each result is the child's
    peak RSS so far: below a bound for the last case, it is below it for every case."""
    import json

    r = subprocess.run([python, "-c", CHILD_MANY, str(limit), json.dumps(argvs)], capture_output=True, text=True,
                       timeout=timeout, cwd=cwd, env=dict(os.environ))
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    if len(rows) != len(argvs):
        raise RuntimeError(f"child ended after {len(rows)} of {len(argvs)} cases (status {r.returncode}): "
                           f"{r.stderr[-2000:]}")
    return [Result(int(x["rc"]), x["stdout"], x["stderr"], x["peak_mib"], x["seconds"]) for x in rows]
