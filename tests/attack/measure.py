"""The before/after table of issue 16's budget cases: each case in a child under RLIMIT_AS.

    python tests/attack/measure.py [--python PY] [--limit-gib 2] [--timeout 20]

``--python`` picks the checkout (e.g. /work/main/.venv/bin/python for "before"). Prints
case, exit status, whether stderr is one ``refnet: error:`` line, peak RSS and seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import CASES  # noqa: E402
from harness import GIB, run_cli  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--limit-gib", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=20.0)
    a = ap.parse_args()
    print("| case | exit | one line | peak RSS MiB | s | last stderr line |")
    print("|---|---|---|---|---|---|")
    for name, make in CASES.items():
        d = Path(tempfile.mkdtemp())
        r = run_cli(make(d), limit=int(a.limit_gib * GIB), timeout=a.timeout, cwd=d, python=a.python)
        last = (r.stderr.strip().splitlines() or [""])[-1][:110].replace("|", "/")
        rc = "killed (timeout)" if r.timed_out else str(r.rc)
        one = "yes" if r.one_line_error else "no"
        print(f"| {name} | {rc} | {one} | {r.peak_mib:.0f} | {r.seconds:.1f} | {last} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
