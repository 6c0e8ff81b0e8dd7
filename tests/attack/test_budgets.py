"""Issue 16 cases 2, 3 and 5: each input that used gigabytes or minutes, rerun in a child under
RLIMIT_AS 2 GiB, must end in success or one ``refnet: error:`` line with exit status 2, with
nothing left on disk. The oracles: the sizes and MACs computed here from the shapes
(independently of refnet), and LeNet's prediction for the thin picture from cv2.dnn.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_env import attack_models_dir, models_env  # noqa: E402, F401 (autouse fixture)
from cases import CASES, make_png_bomb, png_bytes  # noqa: E402
from harness import GIB, run_cli, run_cli_many  # noqa: E402

import refnet  # noqa: E402
from refnet.errors import BudgetError  # noqa: E402
from refnet.runtime import budget  # noqa: E402
from refnet.runtime.imagesize import header_size  # noqa: E402

MODELS = attack_models_dir() or Path("../shared/models")


def _needs_lenet(name: str) -> None:
    if "lenet" in CASES[name].__doc__.lower() and not (MODELS / "lenet_mnist_caffe").is_dir():
        if os.environ.get("CI"):
            pytest.fail("REFNET_MODELS has no LeNet (CI must have it)")
        pytest.skip("needs REFNET_MODELS (LeNet)")


@pytest.fixture(scope="module")
def case_results(tmp_path_factory):
    """Every case, each in its own folder, run one after the other in one child under RLIMIT_AS 2 GiB."""
    d = attack_models_dir()
    if d is not None:
        os.environ.setdefault("REFNET_MODELS", str(d))
    folders = {name: tmp_path_factory.mktemp(name.split()[0]) for name in CASES}
    argvs = {name: CASES[name](folders[name]) for name in CASES}
    before = {name: {p.name for p in f.iterdir()} for name, f in folders.items()}
    results = run_cli_many(list(argvs.values()), limit=2 * GIB, timeout=300)
    return {name: (r, folders[name], before[name]) for name, r in zip(CASES, results)}


@pytest.mark.parametrize("name", list(CASES))
def test_case_ends_cleanly_under_the_memory_limit(name, case_results):
    _needs_lenet(name)
    r, folder, before = case_results[name]
    assert r.peak_mib < 1024, f"{name}: peak RSS {r.peak_mib:.0f} MiB"
    assert r.seconds < 60, f"{name}: {r.seconds:.0f} s"  # a generous hang guard, not a speed claim
    after = {p.name for p in folder.iterdir()}
    if name.startswith("2a"):
        assert r.rc == 0, r.stderr
        assert after - before == {"thin_out.png"}
        assert "Traceback" not in r.stderr
    else:
        assert r.rc == 2 and r.one_line_error, f"{name}: rc {r.rc}\n{r.stderr}"
        assert re.search(r"over the (memory|compute) budget", r.stderr), r.stderr  # refused up front, no MemoryError
        assert after == before  # nothing written


def test_compare_is_refused_as_a_whole_before_any_run(case_results):
    """1500 ReLU outputs of 1x3x512x512, each kept by refnet float64 (8 bytes), float32 (4) and two
    cv2 runs (4 + 4): the need is computed here from the shapes."""
    r, _, _ = case_results["2e compare 1500-layer chain"]
    need = 1500 * 3 * 512 * 512 * (8 + 4 + 4 + 4)
    assert f"{need:,} bytes" in r.stderr and "a compare keeping every layer's output" in r.stderr, r.stderr
    assert "refnet float64 ..." not in r.stderr  # refused before the first run


def test_thin_picture_is_drawn_at_its_size_and_classified_like_cv2(tmp_path):
    _needs_lenet("2a thin 1x5000 png")
    import cv2

    from refnet.pipelines import read_image, render, resolve_model, run_task

    (tmp_path / "t.png").write_bytes(png_bytes(5000, 1))
    img = read_image(tmp_path / "t.png")
    net, entry, labels = resolve_model([], "lenet-mnist")
    res = run_task(net, img, "classify", entry=entry, labels=labels)
    pic = render(res)
    assert pic.shape[0] < 400 and pic.shape[1] < 5000 + 600  # was 256 x 1,280,000 pixels
    d = MODELS / "lenet_mnist_caffe"
    cvnet = cv2.dnn.readNetFromCaffe(str(d / "lenet.prototxt"), str(d / "lenet_iter_10000.caffemodel"))
    cvnet.setInput(entry.preprocess.blob(img))
    assert res.data["top"][0][0] == int(np.argmax(cvnet.forward()))


def test_budget_names_layer_need_and_limit(tmp_path):
    """The deconvolution case in-process: the need is the estimate the module documents, from
    shapes computed here: the input, the output and kernel temporaries of twice the output."""
    from refnet.net import load_caffe

    argv = CASES["2d float64 deconv 2000^2"](tmp_path)
    net = load_caffe(argv[1], argv[2])
    x = np.zeros((1, 1, 1000, 1000))
    out_bytes = 500 * 2000 * 2000 * 8
    need = 1000 * 1000 * 8 + out_bytes + 2 * out_bytes + 500 * 4 * 8  # input, output, temporaries, weights
    budget.set_memory_budget("1GiB")
    try:
        with pytest.raises(BudgetError) as ei:
            net.forward(x, precision="float64")
    finally:
        budget.set_memory_budget()
    e = ei.value
    assert (e.kind, e.layer, e.need, e.limit) == ("memory", "up", need, 2**30)
    assert "layer 'up'" in str(e) and f"{need:,} bytes" in str(e) and "1.0 GiB" in str(e)
    budget.set_memory_budget(need)  # exactly enough: planned (not run: 16 GB)
    try:
        net._program(("up",), False, {"data": x}, refnet.net._ctx("float64"))
    finally:
        budget.set_memory_budget()


def test_compute_budget_counts_pooling_windows(tmp_path):
    from refnet.net import load_caffe

    argv = CASES["3 pooling compute bomb"](tmp_path)
    net = load_caffe(argv[1])
    macs = (3000 - 1500 + 1) ** 2 * 1500**2  # every output sums a 1500x1500 window
    with pytest.raises(BudgetError) as ei:
        net.forward(np.zeros((1, 1, 3000, 3000), np.float32))
    assert (ei.value.kind, ei.value.layer, ei.value.need) == ("compute", "pool", macs)
    assert f"{macs:,} MACs" in str(ei.value) and "100,000,000,000 MACs" in str(ei.value)
    refnet.set_compute_budget(macs)
    try:  # at the limit it is planned (and would run): no error before running
        net._program(("pool",), True, {"data": np.zeros((1, 1, 3000, 3000), np.float32)}, refnet.net._ctx("float32"))
    finally:
        refnet.set_compute_budget()


def test_image_header_is_read_not_decoded(tmp_path):
    p = tmp_path / "b.png"
    make_png_bomb(tmp_path)
    hdr = header_size(tmp_path / "bomb.png")
    assert (hdr.format, hdr.width, hdr.height, hdr.channels) == ("png", 60000, 60000, 3)
    import cv2

    ok, jpg = cv2.imencode(".jpg", np.zeros((37, 53, 3), np.uint8))
    p.write_bytes(jpg.tobytes())
    assert header_size(p)[:4] == ("jpeg", 53, 37, 3)
    for ext, shape in ((".bmp", (9, 7, 3)), (".ppm", (5, 6, 3)), (".pgm", (4, 3)), (".webp", (11, 13, 3))):
        ok, buf = cv2.imencode(ext, np.zeros(shape, np.uint8))
        p.write_bytes(buf.tobytes())
        h = header_size(p)
        assert (h.width, h.height) == (shape[1], shape[0]), ext


@pytest.mark.parametrize("text,want", [("4G", 4 * 10**9), ("512MiB", 2**29), ("1e9", 10**9), ("none", None),
                                       ("inf", None), (1024, 1024)])
def test_parse_size(text, want):
    assert budget.parse_size(text) == want


@pytest.mark.parametrize("bad", ["-1", "lots", "0", "4 parsecs", float("nan")])
def test_parse_size_refuses(bad):
    with pytest.raises(ValueError):
        budget.parse_size(bad)


def test_default_budget_follows_rlimit_as(tmp_path):
    """In a child under RLIMIT_AS 1.5 GiB the default budget is at most what is left of it."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29)); "
            "from refnet.runtime import budget; import re; "
            "used = int(open('/proc/self/statm').read().split()[0]) * 4096; "
            "b = budget.default_memory_budget(); print(b, (3 << 29) - used)")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.split()
    got, left = int(out[0]), int(out[1])
    assert 0 < got <= left + (1 << 20)


def test_exit_codes_for_file_errors(tmp_path):
    """IsADirectoryError, PermissionError (as an unprivileged user), an unwritable output folder
    (checked before the work) and a cv2 error: one line, exit 2."""
    folder = tmp_path / "adir.prototxt"
    folder.mkdir()
    r = run_cli(["info", str(folder)], cwd=tmp_path)
    assert r.rc == 2 and r.one_line_error, r.stderr
    r = run_cli(["info", "--zoo", "lenet-mnist", "--json", str(tmp_path / "missing" / "x.json")], cwd=tmp_path)
    assert r.rc == 2 and r.one_line_error and "does not exist" in r.stderr
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name:"x" input:"data" input_shape{dim:1 dim:1 dim:4 dim:4}\n'
                   'layer{name:"r" type:"ReLU" bottom:"data" top:"r"}\n')
    if os.getuid() == 0 and _world_runnable(sys.executable):
        os.chmod(tmp_path, 0o755)
        secret = tmp_path / "secret.prototxt"
        secret.write_text(bad.read_text())
        os.chmod(secret, 0o600)
        r = run_cli(["info", str(secret)], cwd="/", user=65534, env={"HOME": "/nonexistent"})
        assert r.rc == 2 and r.one_line_error and "Permission denied" in r.stderr, r.stderr
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        r = run_cli(["info", str(bad), "--json", str(ro / "x.json")], cwd=ro, user=65534,
                    env={"HOME": "/nonexistent"})
        assert r.rc == 2 and r.one_line_error and "not writable" in r.stderr, r.stderr
        # info works in a folder it cannot write (nothing is written there)
        r = run_cli(["info", str(bad)], cwd=ro, user=65534, env={"HOME": "/nonexistent"})
        assert r.rc == 0 and re.search(r"\br\b.*relu", r.stdout), r.stdout + r.stderr


def _world_runnable(path: str) -> bool:
    p = Path(os.path.realpath(path))
    return all(os.stat(d).st_mode & 0o001 for d in p.parents) and bool(os.stat(p).st_mode & 0o001)


@pytest.mark.parametrize("exc,code,text", [
    (PermissionError(13, "Permission denied", "/m/x.prototxt"), 2, "Permission denied: /m/x.prototxt"),
    (IsADirectoryError(21, "Is a directory", "/m"), 2, "Is a directory: /m"),
    (MemoryError(), 2, "out of memory"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_exceptions_become_one_line_and_a_status(monkeypatch, capsys, exc, code, text):
    from refnet import cli
    from refnet.cli import selfcheck as selfcheck_cli

    def raiser(args):
        raise exc

    monkeypatch.setattr(selfcheck_cli, "selfcheck_command", raiser)
    assert cli.main(["selfcheck"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("refnet: ") and text in err[0]


def test_cv2_error_is_a_user_error(tmp_path, capsys):
    """A prototxt cv2.dnn refuses (compare runs cv2 on it) and a cv2.error from cv2 itself."""
    import cv2

    from refnet.cli.toplevel import classify

    try:
        cv2.resize(np.zeros((0, 0), np.uint8), (0, 0))
    except cv2.error as e:
        code, msg = classify(e)
    assert code == 2 and msg.startswith("OpenCV: ") and "\n" not in msg


def test_internal_error_is_exit_3_and_debug_anywhere_shows_the_traceback(tmp_path, monkeypatch, capsys):
    from refnet import cli

    def boom(args):
        raise ZeroDivisionError("a bug")

    parser = cli.build_parser

    def patched():
        p = parser()
        p._subparsers._group_actions[0].choices["selfcheck"].set_defaults(func=boom)
        return p

    monkeypatch.setattr(cli, "build_parser", patched)
    assert cli.main(["selfcheck"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("refnet: error: internal error: ZeroDivisionError: a bug")
    with pytest.raises(ZeroDivisionError):
        cli.main(["selfcheck", "--debug"])
    with pytest.raises(SystemExit) as ei:
        cli.main(["--version"])
    assert ei.value.code == 0 and capsys.readouterr().out.startswith(f"refnet {refnet.__version__} (python ")


def test_compare_budget_counts_the_runs_it_makes(tmp_path):
    """check_compare's estimate, worked by hand for a 1x3x8x8 -> conv 4x3x3x3 -> ReLU net: the float64
    trace (8 bytes an element), the float32 one (4), 4 per cv2.dnn run, the parameters in float64,
    plus one backend chunk. A compare without cv2.dnn (ONNX models: other backends only) counts no
    cv2 run, and its refusal does not speak of cv2.dnn runs (it said '2 cv2.dnn runs')."""
    from writers.caffe_writer import Layer, NetSpec, write_net

    w = np.ones((4, 3, 3, 3), np.float32)
    conv = {"convolution_param": {"num_output": 4, "kernel_size": 3}}
    layers = [Layer("conv", "Convolution", ["data"], ["conv"], conv, [w, np.zeros(4, np.float32)]),
              Layer("relu", "ReLU", ["conv"], ["relu"])]
    net = refnet.load(*write_net(NetSpec(layers, {"data": (1, 3, 8, 8)}), tmp_path))
    feeds = {"data": np.zeros((1, 3, 8, 8), np.float32)}
    elements = 4 * 6 * 6 * 2  # conv and relu outputs (the input is no layer's output)
    params = (4 * 3 * 3 * 3 + 4) * 8
    assert budget.check_compare(net, feeds, ("float64", "float32"), 2) == elements * (8 + 4 + 8) + params
    assert budget.check_compare(net, feeds, ("float64",), 0, 1000) == elements * 8 + params + 1000
    budget.set_memory_budget(100)
    try:
        with pytest.raises(BudgetError) as e:
            budget.check_compare(net, feeds, ("float64", "float32"), 0, 0)
        assert "cv2.dnn" not in str(e.value) and "of refnet float64, float32" in str(e.value)
        with pytest.raises(BudgetError) as e:
            budget.check_compare(net, feeds, ("float64", "float32"), 1, 0)
        assert "and 1 cv2.dnn run" in str(e.value) and "runs" not in str(e.value)
    finally:
        budget.set_memory_budget()  # back to the environment / default


def test_compare_of_a_20000_layer_onnx_chain_ends_within_the_hang_guard(tmp_path):
    """compare on 20000 ReLUs of 1x1x2x2 (a 1 MB ONNX file) against onnxruntime: the layer pass
    scanned every kept value per layer, built the tensor -> producer map per layer and looked
    layers up by name in a list (quadratic: > 120 s; 12 s now). One AGREE within the hang guard."""
    pytest.importorskip("onnxruntime")
    from cases import _onnx
    from onnx import helper

    n = 20000
    nodes = [helper.make_node("Relu", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}" if i < n - 1 else "y"])
             for i in range(n)]
    p = _onnx(tmp_path, "chain", nodes, (1, 1, 2, 2))
    r = run_cli(["compare", str(p), "--random", "--backend", "ort"], limit=2 * GIB, timeout=60)
    assert not r.timed_out and r.rc == 0, f"rc {r.rc} after {r.seconds:.0f} s\n{r.stderr[-2000:]}"
    assert "verdict: AGREE" in r.stdout and f"{n} layers" in r.stdout


def test_detection_output_nms_work_is_budgeted(tmp_path):
    """DetectionOutput's NMS visits, per non-background class, every candidate (all priors when
    nms top_k is huge) and overlaps it with up to as many kept boxes: it had no MAC rule, and an
    SSD head straight on a 300x300 input (180000 priors x 20 classes, top_k 10^9) ran for ever
    (killed after 120 s). Here 20x20 (800 priors): 20 x 800 x (800 + 1000) MACs, by hand."""
    from writers.caffe_writer import E, Layer, NetSpec, write_net

    rng = np.random.default_rng(0)
    perm = {"permute_param": {"order": [0, 2, 3, 1]}}
    layers = [
        Layer("loc", "Convolution", ["data"], ["loc"], {"convolution_param": {"num_output": 8, "kernel_size": 1}},
              [rng.normal(0, 0.1, (8, 3, 1, 1)).astype(np.float32), np.zeros(8, np.float32)]),
        Layer("locp", "Permute", ["loc"], ["locp"], perm),
        Layer("locf", "Flatten", ["locp"], ["locf"], {"flatten_param": {"axis": 1}}),
        Layer("conf", "Convolution", ["data"], ["conf"], {"convolution_param": {"num_output": 42, "kernel_size": 1}},
              [rng.normal(0, 0.1, (42, 3, 1, 1)).astype(np.float32), np.zeros(42, np.float32)]),
        Layer("confp", "Permute", ["conf"], ["confp"], perm),
        Layer("conff", "Flatten", ["confp"], ["conff"], {"flatten_param": {"axis": 1}}),
        Layer("pb", "PriorBox", ["data", "data"], ["pb"],
              {"prior_box_param": {"min_size": 2.0, "max_size": 4.0, "variance": [0.1, 0.1, 0.2, 0.2]}}),
        Layer("det", "DetectionOutput", ["locf", "conff", "pb"], ["det"],
              {"detection_output_param": {"num_classes": 21, "background_label_id": 0, "keep_top_k": 10**9,
                                          "confidence_threshold": 0.0, "code_type": E("CENTER_SIZE"),
                                          "nms_param": {"nms_threshold": 0.45, "top_k": 10**9}}})]
    net = refnet.load(*write_net(NetSpec(layers, {"data": (1, 3, 20, 20)}, input_style="input_shape"), tmp_path))
    macs = 20 * 800 * (800 + 1000)
    budget.set_compute_budget(10**7)
    try:
        with pytest.raises(BudgetError) as ei:
            net.forward(np.zeros((1, 3, 20, 20), np.float32))
        assert (ei.value.kind, ei.value.layer, ei.value.need) == ("compute", "det", macs), str(ei.value)
    finally:
        budget.set_compute_budget()


def test_detection_output_padding_rows_are_budgeted(tmp_path):
    """keep_top_k pads DetectionOutput's output with zero rows up to keep_top_k per image (cv2's
    layout): keep_top_k 10^9 allocated 1 x 1 x 10^9 x 7 floats (26 GiB; MemoryError) for a net
    of one prior. Refused before the kernel runs: the size is known only from the attribute."""
    from writers.caffe_writer import E, Layer, NetSpec, write_net

    layers = [
        Layer("pb", "PriorBox", ["data", "data"], ["pb"], {"prior_box_param": {"min_size": 1.0}}),
        Layer("locf", "Flatten", ["data"], ["locf"], {"flatten_param": {"axis": 1}}),
        Layer("conff", "Flatten", ["conf"], ["conff"], {"flatten_param": {"axis": 1}}),
        Layer("det", "DetectionOutput", ["locf", "conff", "pb"], ["det"],
              {"detection_output_param": {"num_classes": 2, "keep_top_k": 10**9, "code_type": E("CENTER_SIZE"),
                                          "nms_param": {"nms_threshold": 0.45}}})]
    net = refnet.load(*write_net(NetSpec(layers, {"data": (1, 4, 1, 1), "conf": (1, 2, 1, 1)},
                                         input_style="input_shape"), tmp_path))
    with pytest.raises(BudgetError) as ei:
        net.forward({"data": np.zeros((1, 4, 1, 1), np.float32), "conf": np.full((1, 2, 1, 1), 0.5, np.float32)})
    assert ei.value.layer == "det" and "(1, 1, 1000000000, 7)" in str(ei.value), str(ei.value)


def test_proposal_nms_work_is_budgeted(tmp_path):
    """Proposal's NMS visits every candidate anchor (pre_nms_topn 0: all of them) and overlaps it
    with up to as many kept boxes; it had no MAC rule (a 1000x1000 RPN map with pre_nms_topn 0:
    9 x 10^6 anchors, ~10^14 overlaps). Here 30x30 x 1 anchor: 900 x (900 + 1000) MACs plus the
    3600 deltas decoded, by hand, over a 10^6 budget."""
    from writers.caffe_writer import Layer, NetSpec, write_net

    layers = [Layer("prop", "Proposal", ["s", "d", "im_info"], ["rois"],
                    {"proposal_param": {"feat_stride": 16, "base_size": 16, "min_size": 16, "ratio": [1.0],
                                        "scale": [8.0], "pre_nms_topn": 0, "post_nms_topn": 300,
                                        "nms_thresh": 0.7}})]
    net = refnet.load(*write_net(NetSpec(layers, {"s": (1, 2, 30, 30), "d": (1, 4, 30, 30), "im_info": (1, 3)},
                                         input_style="input_shape"), tmp_path))
    rng = np.random.default_rng(0)
    feeds = {"s": rng.uniform(0, 1, (1, 2, 30, 30)).astype(np.float32), "d": np.zeros((1, 4, 30, 30), np.float32),
             "im_info": np.array([[480.0, 480.0, 1.0]], np.float32)}
    budget.set_compute_budget(10**6)
    try:
        with pytest.raises(BudgetError) as ei:
            net.forward(feeds)
        assert (ei.value.layer, ei.value.need) == ("prop", 900 * (900 + 1000) + 3600), str(ei.value)
    finally:
        budget.set_compute_budget()
    assert next(iter(net.forward(feeds).values())).shape[-1] == 5  # within the default budget it runs


def test_a_childs_peak_is_its_own_not_the_test_processs():
    """The harness reports the child's own peak RSS: with this process holding 1.5 GiB when it
    starts the child, `refnet --version` (and a run_cli_many child) still peak far below it (the
    rusage high-water mark that wait4 gives also holds the parent's memory at the fork: after the
    two-stage tests had grown the test process to 3 GiB every attack case read 3138 MiB)."""
    held = np.ones(3 << 27, np.float32)  # 1.5 GiB, touched
    try:
        r = run_cli(["--version"], limit=0)
        (m,) = run_cli_many([["--version"]], limit=0)
    finally:
        del held
    assert r.rc == 0 and "refnet" in r.stdout
    assert 0 < r.peak_mib < 600 and 0 < m.peak_mib < 600, (r.peak_mib, m.peak_mib)
