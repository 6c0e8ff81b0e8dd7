"""DESIGN.md's double-import trap: only `refnet.kernels` / `refnet.weights_import` may exist."""

import subprocess
import sys


def test_bare_packages_never_imported():
    code = (
        "import sys, refnet, refnet.kernels, refnet.weights_import;"
        "bad=[m for m in ('kernels','weights_import') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_kernels_module_identity():
    import refnet.kernels as k

    assert k.__name__ == "refnet.kernels"
    assert "kernels" not in sys.modules
    assert "weights_import" not in sys.modules


def test_errors_hierarchy():
    from refnet.errors import ModelFormatError, RefnetError, ShapeError, UnsupportedLayerError

    e = ModelFormatError("bad varint", file="x.caffemodel", offset=17, expected="<= 10 bytes")
    assert isinstance(e, RefnetError) and isinstance(e, ValueError)
    assert "x.caffemodel" in str(e) and "17" in str(e) and "10 bytes" in str(e)
    e2 = ModelFormatError("unexpected '}'", file="a.prototxt", line=3, col=9)
    assert "a.prototxt:3:9" in str(e2)
    u = UnsupportedLayerError("foo", "Bar", ["Convolution", "ReLU"])
    assert "Bar" in str(u) and "Convolution" in str(u)
    s = ShapeError("channel mismatch", layer="conv1", expected=(1, 3, 4, 4), got=(1, 2, 4, 4))
    assert isinstance(s, ValueError) and "conv1" in str(s)
