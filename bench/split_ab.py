"""A/B of the split-GEMM worker pool (refnet.kernels._workers, issue 17) in one sitting.

    python bench/split_ab.py googlenet,mobilenet_ssd,squeezenet,inception_v1,resnet50 [--repeat 9]
        [--busy-neighbour] [--variants split2,py2,one,cv2]

Per model, alternating rounds (fair protocol of refnet.bench.alternate: the variant's thread
set-up, a 0.1 s pause and an untimed warm-up call before every timed call) of

* ``split2``: 2 threads, GEMMs split over the worker pool, BLAS 1 thread (the new default);
* ``py2``:    the same with ``REFNET_POOL_DRIVERS=0``: one Python call per block instead of one
  nogil numba call per thread and layer (refnet.kernels._blasjit; the split of before);
* ``blas2``:  2 threads, ``REFNET_CONV_SPLIT=0``: no pool, OpenBLAS's own 2 threads (before);
* ``region2``: ``split2`` with ``REFNET_NUMBA_DRIVERS=1``: each layer's drivers run as one numba
  parallel region (native threads, no GIL hand-over) instead of over the worker pool; used where
  numba's layer is TBB (run with ``NUMBA_THREADING_LAYER=tbb``; "any" in ``REFNET_NUMBA_DRIVERS``
  would use it with any layer);
* ``region2b1``, ``region2b4``: ``region2`` with 1 or 4 blocks per thread instead of 2
  (``refnet.kernels.conv._REGION_BLOCKS_PER_THREAD``); ``split2b2``: ``split2`` with 2 instead
  of 4 (``_BLOCKS_PER_THREAD``);
* ``region2b1np``: ``region2b1`` with ``REFNET_PACKED_SPLIT=0``: the packed / direct_cin convs on
  the split BLAS paths at 2 threads, as before refnet.kernels._packsplit (its A/B);
* ``region2b1mw``: ``region2b1`` with ``refnet.kernels._parallel.TBB_MIN_WORK`` = PARALLEL_MIN_WORK
  (the numba kernels' parallel builds from 2^17 work elements on TBB too, as before);
* ``region2b1u2``, ``region2b1u8``: ``region2b1`` with 2 or 8 units per thread in the packed /
  direct_cin splits (``refnet.kernels._packsplit.UNITS_PER_THREAD``, default 4);
* ``region2b1pf``: ``region2b1`` with the packed units' weight prefetch
  (``refnet.kernels._packsplit.PREFETCH``; the plans' unit tables are rebuilt when it changes);
* ``one``:    1 thread;
* ``cv2``:    cv2.dnn 4.x at 2 threads (caffe models; the ONNX ones in cv2 4.x where it loads them);
* ``auto``:   refnet's default (load-aware) thread count.

Prints medians, minima, the process CPU time per call (all threads: a GEMM split that costs
little CPU beyond the one-thread run halves the wall time where two cores are free) and the
medians of per-round ratios. GoogLeNet / MobileNet-SSD are the
arch-only prototxts with the test suite's seeded caffemodels; squeezenet / inception_v1 /
resnet50 the onnx package's light zoo graphs with seeded weights (as bench/peer_rows.py).
Run from the checkout with REFNET_MODELS set. Not collected by ``pytest bench``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROTOS = {"googlenet": "arch_only/bvlc_googlenet/deploy.prototxt",
          "mobilenet_ssd": "arch_only/mobilenet_ssd_voc/MobileNetSSD_deploy.prototxt"}


def _load(name: str, wd: str):
    import refnet

    if name in PROTOS:
        sys.path.insert(0, str(ROOT / "tests"))
        from writers.caffe_writer import write_random_caffemodel

        models = Path(os.environ.get("REFNET_MODELS", ROOT.parent / "shared" / "models"))
        w = Path(wd) / f"{name}.caffemodel"
        write_random_caffemodel(models / PROTOS[name], w, seed=0)
        return refnet.load(str(models / PROTOS[name]), str(w)), (300, 300) if name == "mobilenet_ssd" else None
    import onnx

    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    return refnet.load(str(refnet.archs.seed_onnx_weights(light / f"light_{name}.onnx", Path(wd) / f"{name}.onnx",
                                                          seed=0))), None


def feeds_for(net, size) -> dict[str, np.ndarray]:
    """Seeded batch-1 inputs for ``net`` (``size`` (W, H) or None: the declared size)."""
    rng = np.random.default_rng(0)
    feeds = {}
    for k, shp in net.input_shapes.items():
        shp = [1] + list(shp)[1:]  # batch 1 (the GoogLeNet deploy prototxt declares 10)
        if size is not None:
            shp[2], shp[3] = size[1], size[0]
        feeds[k] = rng.standard_normal(shp).astype(np.float32)
    return feeds


def _variants(net, feeds, with_cv2: bool):
    from refnet.bench import _cv2_runner
    from refnet.runtime.threads import set_num_threads

    region = os.environ.get("REFNET_NUMBA_DRIVERS", "1")
    region = region if region != "0" else "1"  # (the region2* variants' setting; the others "0")

    import refnet.kernels.conv as conv
    from refnet.kernels import _packsplit, _parallel

    def setup(split: str, n, drivers: str = "1", regions: str = "0", per_thread: int = 4, region_per: int = 2,
              packed: str = "1", tbb_min_work: int = _parallel.TBB_MIN_WORK, units: int = _packsplit.UNITS_PER_THREAD,
              pf: bool = False):
        def prep():
            if _packsplit.PREFETCH != pf:  # (the plans keep their unit tables: drop them)
                import gc

                _packsplit.PREFETCH = pf
                for o in gc.get_objects():
                    if isinstance(o, conv.Conv2dPlan):
                        o.__dict__.pop("_units", None)
            os.environ["REFNET_PACKED_SPLIT"] = packed
            _packsplit.UNITS_PER_THREAD = units
            _parallel.TBB_MIN_WORK = tbb_min_work
            conv._BLOCKS_PER_THREAD = per_thread
            conv._REGION_BLOCKS_PER_THREAD = region_per
            os.environ["REFNET_CONV_SPLIT"] = split
            os.environ["REFNET_POOL_DRIVERS"] = drivers
            os.environ["REFNET_NUMBA_DRIVERS"] = regions
            set_num_threads(n)
        return prep

    def fwd():
        return net.forward(feeds)

    out = {"split2": (setup("1", 2), fwd), "region2": (setup("1", 2, "1", region), fwd),
           "region2b1": (setup("1", 2, "1", region, region_per=1), fwd),
           "region2b1np": (setup("1", 2, "1", region, region_per=1, packed="0"), fwd),
           "region2b1mw": (setup("1", 2, "1", region, region_per=1, tbb_min_work=_parallel.PARALLEL_MIN_WORK), fwd),
           "region2b1u2": (setup("1", 2, "1", region, region_per=1, units=2), fwd),
           "region2b1pf": (setup("1", 2, "1", region, region_per=1, pf=True), fwd),
           "region2b1u8": (setup("1", 2, "1", region, region_per=1, units=8), fwd),
           "region2b4": (setup("1", 2, "1", region, region_per=4), fwd),
           "split2b2": (setup("1", 2, per_thread=2), fwd),
           "py2": (setup("1", 2, "0"), fwd), "blas2": (setup("0", 2), fwd),
           "one": (setup("1", 1), fwd), "auto": (setup("1", "auto"), fwd)}
    if with_cv2:
        try:
            import cv2

            run = _cv2_runner(net, feeds)

            def prep_cv2():
                set_num_threads(1)  # refnet's threads asleep
                cv2.setNumThreads(2)
            out["cv2"] = (prep_cv2, run)
        except Exception as e:  # noqa: BLE001 - a peer that cannot load the model is left out
            print(f"(cv2 left out: {type(e).__name__}: {e})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--no-cv2", action="store_true")
    ap.add_argument("--busy-neighbour", action="store_true")
    ap.add_argument("--variants", default="", help="comma-separated subset, e.g. split2,py2,one,cv2")
    a = ap.parse_args(argv)
    from contextlib import nullcontext

    from refnet.bench import alternate, busy_neighbour
    from refnet.kernels._parallel import choose_threading_layer

    # numba's layer for the whole process, chosen as for 2 threads (TBB when REFNET_NUMBA_DRIVERS
    # is not "0" and the tbb extra is installed, else workqueue; NUMBA_THREADING_LAYER overrides)
    print(f"numba threading layer: {choose_threading_layer(2)} (region2* variants need tbb)")
    with tempfile.TemporaryDirectory(prefix="refnet-split-ab-") as wd:
        for name in a.models.split(","):
            net, size = _load(name, wd)
            feeds = feeds_for(net, size)
            var = _variants(net, feeds, not a.no_cv2)
            if a.variants:
                var = {k: v for k, v in var.items() if k in a.variants.split(",")}
            names = list(var)
            cpu: dict[str, list[float]] = {k: [] for k in names}

            def cpu_timed(fn, into):
                def run():
                    c0 = time.process_time()
                    fn()
                    into.append(time.process_time() - c0)
                return run
            with busy_neighbour(3600) if a.busy_neighbour else nullcontext():
                with open("/proc/loadavg") as f:
                    load0 = f.read().split()[:4]
                times = alternate([cpu_timed(var[k][1], cpu[k]) for k in names], repeat=a.repeat, warmup=1, pause=0.1,
                                  warm_each=True, prepare=[var[k][0] for k in names])
                with open("/proc/loadavg") as f:
                    load1 = f.read().split()[:4]
            med = {k: statistics.median(t) * 1e3 for k, t in zip(names, times)}
            print(f"{name}: load {' '.join(load0)} -> {' '.join(load1)}"
                  + (" (busy neighbour)" if a.busy_neighbour else "") + f", {a.repeat} alternating rounds")
            print("  median ms  " + "  ".join(f"{k} {v:.1f}" for k, v in med.items()))
            print("  min ms     " + "  ".join(f"{k} {min(t) * 1e3:.1f}" for k, t in zip(names, times))
                  + "  (min: the least disturbed call, a quiet-machine estimate)")
            print("  CPU ms     " + "  ".join(f"{k} {statistics.median(cpu[k]) * 1e3:.1f}" for k in names)
                  + "  (process CPU time per call, median: work + spinning, all threads)")
            by = dict(zip(names, times))
            pairs = [(r, q) for r in ("region2", "region2b1", "region2b4")
                     for q in ("region2b1np", "region2b1mw", "region2b1u2", "region2b1u8", "region2b1pf", "split2",
                               "one", "cv2")]
            pairs += [("split2", "py2"), ("py2", "one"),
                     ("py2", "cv2"), ("split2", "blas2"), ("split2", "one"),
                     ("blas2", "one"), ("split2", "cv2"), ("blas2", "cv2"),
                     ("auto", "one"), ("auto", "cv2")]
            rat = []
            for p, q in pairs:
                if p in by and q in by:
                    r = statistics.median(x / y for x, y in zip(by[p], by[q]))
                    rat.append(f"{p}/{q} {r:.2f}")
            print("  per-round ratio medians  " + "  ".join(rat), flush=True)
    reset_env()
    return 0


def reset_env() -> None:
    """Drop the switches the variants set (back to refnet's defaults)."""
    os.environ.pop("REFNET_CONV_SPLIT", None)
    os.environ.pop("REFNET_POOL_DRIVERS", None)
    os.environ.pop("REFNET_NUMBA_DRIVERS", None)
    os.environ.pop("REFNET_PACKED_SPLIT", None)


if __name__ == "__main__":
    sys.exit(main())
