"""Run one ONNX file in cv2.dnn in this interpreter: the worker behind the ``cv2@PYTHON`` backend.

Standalone on purpose (imports only cv2, numpy and the standard library), so it runs in any
interpreter that has opencv-python, e.g. the OpenCV 5 virtual environment, which cannot share a
process with refnet's cv2 4.x. Protocol (one request per process):

    python cv2_worker.py --version                      -> prints cv2.__version__
    python cv2_worker.py MODEL.onnx FEEDS.npz OUT.npz NAME [NAME ...]
    python cv2_worker.py --batch JOBS.json RESULTS.json   (JOBS: [[model, feeds, out, [names]], ...];
                                                           RESULTS: one null or error string per job)

FEEDS.npz holds the input arrays by input name; OUT.npz receives one array per requested
graph output NAME. Errors are printed as one JSON line {"error": ...} on stdout and the exit
status is 1; a crash of cv2 itself shows as a signal exit status to the parent.
"""

import json
import sys


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
    run_one(argv[0], argv[1], argv[2], argv[3:])
    return 0


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
