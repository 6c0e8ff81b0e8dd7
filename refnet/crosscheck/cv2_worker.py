"""Run one ONNX file in cv2.dnn in this interpreter: the worker behind the ``cv2@PYTHON`` backend.

Standalone on purpose (imports only cv2, numpy and the standard library), so it runs in any
interpreter that has opencv-python, e.g. the OpenCV 5 virtual environment, which cannot share a
process with refnet's cv2 4.x. Protocol (one request per process):

    python cv2_worker.py --version                      -> prints cv2.__version__
    python cv2_worker.py MODEL.onnx FEEDS.npz OUT.npz NAME [NAME ...]
    python cv2_worker.py --batch JOBS.json RESULTS.json   (JOBS: [[model, feeds, out, [names]], ...];
                                                           RESULTS: one null or error string per job)
    python cv2_worker.py --time MODEL.onnx FEEDS.npz THREADS ROUNDS PAUSE
                                -> one JSON line {"times": [seconds, ...]}: the model is read once,
                                   run once (set-up), then each round: a PAUSE s sleep, an untimed
                                   warm-up forward and one timed forward (the fair protocol of
                                   refnet.bench), all with cv2.setNumThreads(THREADS) (-1: cv2's default)
    python cv2_worker.py --serve MODEL.onnx FEEDS.npz THREADS
                                -> prints "ready", then per stdin line "run" one forward, answered
                                   with its duration in seconds measured here (so that refnet.bench
                                   can alternate this engine with in-process ones); "quit" ends

FEEDS.npz holds the input arrays by input name; OUT.npz receives one array per requested
graph output NAME. Errors are printed as one JSON line {"error": ...} on stdout and the exit
status is 1; a crash of cv2 itself shows as a signal exit status to the parent.
"""

import json
import sys
import time


def main(argv):
    import cv2

    if argv[:1] == ["--version"]:
        print(cv2.__version__)
        return 0
    if argv[:1] == ["--batch"]:
        with open(argv[1]) as f:
            jobs = json.load(f)
        results = []
        for model, feeds_path, out_path, names in jobs:
            try:
                run_one(model, feeds_path, out_path, names)
                results.append(None)
            except Exception as e:
                results.append(f"{type(e).__name__}: {e}")
        with open(argv[2], "w") as f:
            json.dump(results, f)
        return 0
    if argv[:1] == ["--time"]:
        fwd = _timing_forward(argv[1], argv[2], int(argv[3]))
        rounds, pause = int(argv[4]), float(argv[5])
        times = []
        for _ in range(rounds):
            cv2.setNumThreads(int(argv[3]))
            time.sleep(pause)
            fwd()
            times.append(fwd())
        print(json.dumps({"times": times}))
        return 0
    if argv[:1] == ["--serve"]:
        fwd = _timing_forward(argv[1], argv[2], int(argv[3]))
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() != "run":
                break
            cv2.setNumThreads(int(argv[3]))
            print(repr(fwd()), flush=True)
        return 0
    run_one(argv[0], argv[1], argv[2], argv[3:])
    return 0


def _timing_forward(model, feeds_path, threads):
    """A function that runs one forward of ``model`` on the feeds and returns its seconds
    (read once, cv2's default fusion, one untimed first run for cv2's set-up)."""
    import cv2
    import numpy as np

    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromONNX(model)
    with np.load(feeds_path) as feeds:
        items = [(k, np.ascontiguousarray(feeds[k])) for k in feeds.files]
    have = list(net.getUnconnectedOutLayersNames())

    def fwd():  # setInput counts, as in refnet.bench's in-process cv2 runner
        t0 = time.perf_counter()
        for k, v in items:
            net.setInput(v, k)
        net.forward(have)
        return time.perf_counter() - t0

    fwd()
    return fwd


def run_one(model, feeds_path, out_path, names):
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    net = cv2.dnn.readNetFromONNX(model)
    with np.load(feeds_path) as feeds:
        items = [(k, np.ascontiguousarray(feeds[k])) for k in feeds.files]
    for k, v in items:
        net.setInput(v, k)
    have = list(net.getUnconnectedOutLayersNames())
    if set(have) == set(names):
        res = dict(zip(have, net.forward(have)))
    elif len(have) == len(names):  # cv2 names the outputs by its layers: the graph output order holds
        res = dict(zip(names, net.forward(have)))
    else:  # cv2 4.x fused some layers away at import: ask for the layers it kept, by name
        known = set(net.getLayerNames())
        ask = [n for n in names if n in known]
        if not ask:
            raise RuntimeError(f"cv2 exposes outputs {have[:8]}, expected {names[:8]}")
        res = dict(zip(ask, net.forward(ask)))
    arrays = {}
    for i, n in enumerate(names):  # an output cv2 cannot give as one numeric array is left out
        if n not in res:
            continue
        try:
            a = np.asarray(res[n])
        except ValueError:
            continue
        if a.dtype != object:
            arrays[f"o{i}"] = a
    np.savez(out_path, **arrays)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as e:  # reported to the parent as this backend failing
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
