"""Long fuzz runs: every format's structure-aware mutations, in a memory-limited worker.

    python tests/fuzz/run_long.py --total 1000000            # or FUZZ_EXAMPLES=1000000
    python tests/fuzz/run_long.py --seconds 600 --formats t7 cfg

Inputs are generated deterministically (``--seed``; input ``i`` of a format is always the same
bytes) by ``fuzzlib.generate`` inside one worker process. Before every input the worker caps
its address space (``RLIMIT_AS``) at what it uses now plus max(256 MiB, 4x the input's size)
and arms a timer (``--timeout``, default 5 s): a MemoryError, a timeout, any exception other
than ModelFormatError/UnsupportedLayerError/ShapeError, or an error that does not say where
is an *escape*. The parent watches the worker: if it dies (segfault, abort) or hangs inside C
code past the timer, the input in flight is recorded as an escape and a new worker resumes
after it. Escapes are minimised and written to ``--escapes-dir``; the table at the end
(also written as JSON with ``--json``) gives, per format, the inputs tried and the escapes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import signal
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import fuzzlib as F  # noqa: E402

MIB = 1 << 20


class _Timeout(BaseException):
    """Raised by the per-input timer (a BaseException: no `except Exception` swallows it)."""


def _on_alarm(signum, frame):  # pragma: no cover - signal handler
    raise _Timeout()


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _run_one(case: F.Case, timeout: float) -> tuple[str, str | None, str]:
    """(outcome, escape kind or None, where) of one input under the memory cap and the timer."""
    size = sum(len(v) for v in case.files.values())
    budget = max(256 * MIB, 4 * size)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + budget, hard))
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return F.run_case(case), None, ""
    except F.Escape as e:
        return "escape", e.kind, e.where
    except _Timeout:
        return "escape", "timeout", ""
    except MemoryError:
        return "escape", "MemoryError", ""
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _worker(conn, progress, base_seed: int, timeout: float) -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    signal.signal(signal.SIGALRM, _on_alarm)
    for fmt in F.FORMATS:  # build every seed (and import refnet's ops) before any limit is set
        F.seeds(fmt)
    F.run_case(F.seeds("prototxt")[0].case(F.seeds("prototxt")[0].files["prototxt"]))
    conn.send(("ready",))
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            return
        _, fmt, start, count = msg
        outcomes: Counter[str] = Counter()
        escapes = []
        fid = F.FORMATS.index(fmt)
        for i in range(start, start + count):
            progress[0], progress[1], progress[2] = fid, i, time.monotonic()
            try:
                case, how = F.generate(fmt, i, base_seed)
            except Exception:  # noqa: BLE001 - a generator bug is not an escape of the loaders
                outcomes["generator-error"] += 1
                traceback.print_exc()
                continue
            outcome, kind, where = _run_one(case, timeout)
            outcomes[outcome] += 1
            if kind is not None:
                escapes.append((i, kind, f"{how} {where}".strip()))
        progress[1] = -1
        conn.send(("done", fmt, start, count, dict(outcomes), escapes))


class _Runner:
    def __init__(self, base_seed: int, timeout: float) -> None:
        self.base_seed, self.timeout = base_seed, timeout
        self.ctx = mp.get_context("fork")
        self.progress = self.ctx.Array("d", [0.0, -1.0, 0.0], lock=False)
        self.proc = None
        self.conn = None

    def start(self) -> None:
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, self.progress, self.base_seed, self.timeout),
                                     daemon=True)
        self.proc.start()
        self.conn = parent
        while not self.conn.poll(1.0):
            if not self.proc.is_alive():
                raise SystemExit(f"the fuzz worker died while starting (exit {self.proc.exitcode}); "
                                 "see its traceback above")
        msg = self.conn.recv()
        assert msg[0] == "ready", msg

    def stop(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(("stop",))
                self.proc.join(5)
            except (BrokenPipeError, OSError):
                pass
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()

    def run_chunk(self, fmt: str, start: int, count: int) -> tuple[dict, list]:
        """Run inputs [start, start + count) of ``fmt``; survive worker deaths and hangs.

        When the worker dies (or hangs in C code past the timer) the input in flight is an
        escape; a new worker reruns the inputs before it (their results died with the old
        worker; inputs are deterministic) and goes on after it.
        """
        outcomes: Counter[str] = Counter()
        escapes: list = []
        pending = [(start, count)]
        while pending:
            s, n = pending.pop(0)
            if n <= 0:
                continue
            res = self._attempt(fmt, s, n)
            if res[0] == "done":
                outcomes.update(res[1])
                escapes += res[2]
                continue
            _, i, kind = res
            _, how = F.generate(fmt, i, self.base_seed)
            outcomes["escape"] += 1
            escapes.append((i, kind, how))
            self.start()
            pending[:0] = [(s, i - s), (i + 1, s + n - i - 1)]
        return dict(outcomes), escapes

    def _attempt(self, fmt: str, start: int, count: int) -> tuple:
        self.conn.send(("run", fmt, start, count))
        while True:
            if self.conn.poll(1.0):
                msg = self.conn.recv()
                return "done", msg[4], msg[5]
            busy = self.progress[1]
            stuck = busy >= 0 and time.monotonic() - self.progress[2] > 3 * self.timeout + 5
            if not self.proc.is_alive() or stuck:
                i = int(busy) if busy >= 0 else start
                kind = "hang" if stuck else f"worker died (exit {self.proc.exitcode})"
                if self.proc.is_alive():
                    self.proc.kill()
                self.proc.join()
                return "crash", i, kind


def _save_escape(fmt: str, i: int, kind: str, base_seed: int, out: Path, minimise: bool) -> Path:
    case, how = F.generate(fmt, i, base_seed)
    if minimise and kind not in ("hang", "timeout") and not kind.startswith("worker died"):
        case = F.minimise(case, kind)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{fmt}-{kind.replace(' ', '_').replace('(', '').replace(')', '')}-{base_seed}-{i}"
    ext = {"prototxt": ".prototxt", "caffemodel": ".caffemodel", "t7": ".t7", "cfg": ".cfg", "weights": ".weights",
           "onnx": ".onnx"}
    for role, data in case.files.items():
        (out / f"{stem}{ext[role]}").write_bytes(data)
    (out / f"{stem}.json").write_text(json.dumps({"format": fmt, "index": i, "seed": base_seed, "kind": kind,
                                                  "mutation": how}, indent=1))
    return out / stem


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--total", type=int, default=int(os.environ.get("FUZZ_EXAMPLES", "0") or 0),
                    help="inputs in all (split evenly over the formats); env FUZZ_EXAMPLES")
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("FUZZ_SECONDS", "0") or 0),
                    help="stop after this many seconds (0: no limit); env FUZZ_SECONDS")
    ap.add_argument("--formats", nargs="*", default=list(F.FORMATS), choices=F.FORMATS)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "0") or 0))
    ap.add_argument("--start", type=int, default=0, help="first input index of every format")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per input")
    ap.add_argument("--chunk", type=int, default=500, help="inputs per round trip to the worker")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    ap.add_argument("--escapes-dir", type=Path, default=Path("fuzz-escapes"))
    ap.add_argument("--no-minimise", action="store_true")
    args = ap.parse_args(argv)
    if not args.total and not args.seconds:
        args.total = 6000
    per_fmt = -(-args.total // len(args.formats)) if args.total else None
    runner = _Runner(args.seed, args.timeout)
    runner.start()
    t0 = time.monotonic()
    stats = {fmt: {"tried": 0, "outcomes": Counter(), "escapes": [], "seconds": 0.0} for fmt in args.formats}
    nxt = {fmt: args.start for fmt in args.formats}
    last_print = t0
    try:
        while True:
            active = [f for f in args.formats if per_fmt is None or nxt[f] - args.start < per_fmt]
            if not active or (args.seconds and time.monotonic() - t0 > args.seconds):
                break
            for fmt in active:
                n = args.chunk if per_fmt is None else min(args.chunk, args.start + per_fmt - nxt[fmt])
                t = time.monotonic()
                outcomes, escapes = runner.run_chunk(fmt, nxt[fmt], n)
                st = stats[fmt]
                st["seconds"] += time.monotonic() - t
                st["tried"] += n
                st["outcomes"].update(outcomes)
                for i, kind, how in escapes:
                    path = _save_escape(fmt, i, kind, args.seed, args.escapes_dir, not args.no_minimise)
                    st["escapes"].append({"index": i, "kind": kind, "mutation": how, "saved": str(path)})
                    print(f"ESCAPE {fmt} #{i}: {kind} ({how}) -> {path}", flush=True)
                nxt[fmt] += n
                if args.seconds and time.monotonic() - t0 > args.seconds:
                    break
            if time.monotonic() - last_print > 60:
                last_print = time.monotonic()
                done = sum(s["tried"] for s in stats.values())
                print(f"[{time.monotonic() - t0:7.0f}s] {done} inputs, "
                      f"{sum(len(s['escapes']) for s in stats.values())} escapes", flush=True)
    finally:
        runner.stop()
    elapsed = time.monotonic() - t0
    print()
    print(f"{'format':11s} {'inputs':>9s} {'loaded':>8s} {'refused':>9s} {'escapes':>8s} {'inputs/s':>9s}")
    total = escaped = 0
    for fmt, st in stats.items():
        o = st["outcomes"]
        refused = sum(v for k, v in o.items() if k not in ("ok", "escape"))
        rate = st["tried"] / st["seconds"] if st["seconds"] else 0.0
        print(f"{fmt:11s} {st['tried']:9d} {o.get('ok', 0):8d} {refused:9d} {len(st['escapes']):8d} {rate:9.0f}")
        total += st["tried"]
        escaped += len(st["escapes"])
    print(f"{'all':11s} {total:9d} {'':8s} {'':9s} {escaped:8d}   in {elapsed:.0f} s (seed {args.seed})")
    if args.json:
        args.json.write_text(json.dumps({
            "seed": args.seed, "start": args.start, "seconds": elapsed, "timeout": args.timeout,
            "formats": {fmt: {"tried": st["tried"], "outcomes": dict(st["outcomes"]), "escapes": st["escapes"],
                              "seconds": st["seconds"]} for fmt, st in stats.items()},
        }, indent=1))
    return 1 if escaped else 0


if __name__ == "__main__":
    sys.exit(main())
