"""``refnet transfer``: transfer learning with a frozen backbone and a new trained head.

1. Data: ``--train DIR`` and ``--valid DIR`` in Keras ``flow_from_directory`` layout (one
   sub-folder per class, class index = sorted folder names).
2. Features: every image through the model (its zoo preprocessing, else the framework's default)
   up to layer L, flattened, computed once and cached (``.npz`` keyed by the model files, the
   layer, the preprocessing and the images' paths, sizes and mtimes).
3. Head: ``InnerProduct [+ ReLU + InnerProduct] + Softmax`` on the standardised features, trained
   by minimising the mean cross-entropy + ``weight_decay/2 * ||W||^2`` with scipy's L-BFGS-B. The
   gradients w.r.t. the head's weights come from refnet itself: the head is a refnet Net and
   ``net.backward`` carries the cross-entropy's gradient w.r.t. the logits, ``(p - onehot)/N``,
   back through its layers (``wrt=`` the InnerProducts).
4. Output: train/valid accuracy, the confusion matrix and every misclassified valid image;
   ``-o NEW`` writes ``NEW.prototxt`` + ``NEW.caffemodel``: the source Caffe net up to L plus the
   head (the standardisation folded into the first InnerProduct), which cv2.dnn.readNetFromCaffe
   loads (checked here: cv2's predictions on the valid images are compared with refnet's).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refnet.errors import RefnetError

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
HEAD = ("transfer_fc1", "transfer_relu", "transfer_fc2", "prob")


class TransferError(RefnetError, ValueError):
    """A transfer-learning request that cannot work (empty folders, class mismatch, non-Caffe model for -o)."""


# ---- data ------------------------------------------------------------------------------------------------
def list_images(folder: str | os.PathLike, classes: Sequence[str] | None = None
                ) -> tuple[list[Path], np.ndarray, list[str]]:
    """Images of a flow_from_directory folder: paths, class indices, class names (sorted sub-folders)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    names = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not names:
        raise TransferError(f"{root} has no class sub-folders (layout: {root}/<class>/<image>)")
    if classes is not None and list(names) != list(classes):
        raise TransferError(f"{root} has classes {names}, the training folder {list(classes)}")
    paths, labels = [], []
    for k, c in enumerate(names):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() in IMAGE_EXT:
                paths.append(f)
                labels.append(k)
    if not paths:
        raise TransferError(f"{root} holds no images ({', '.join(IMAGE_EXT)})")
    return paths, np.array(labels, dtype=np.int64), names


def write_digits_folders(out: str | os.PathLike, valid_fraction: float = 0.25, seed: int = 0,
                         baselines: tuple[str, ...] = ("raw 8x8 pixels", "28x28 pixels")
                         ) -> tuple[Path, Path, dict[str, float]]:
    """scikit-learn's bundled 8x8 handwritten digits (UCI, 1,797 images) as ``out/train`` and
    ``out/valid`` class folders (stratified held-out split), each image upscaled to 20x20 and
    centred in a 28x28 black frame as MNIST's digits are; returns the folders and the accuracy of
    a linear classifier (logistic regression) on the raw 8x8 pixels and on the 28x28 images."""
    import cv2

    try:
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise TransferError("--demo-digits needs scikit-learn (its bundled digits and the linear baselines): "
                            "pip install 'refnet[demo]' (or pip install scikit-learn)") from e

    d = load_digits()
    idx = np.arange(len(d.target))
    tr, va = train_test_split(idx, test_size=valid_fraction, stratify=d.target, random_state=seed)
    out = Path(out)
    big = np.zeros((len(idx), 28, 28), np.uint8)
    for i in idx:
        img = np.clip(d.images[i] * (255.0 / 16.0), 0, 255).astype(np.uint8)
        big[i, 4:24, 4:24] = cv2.resize(img, (20, 20), interpolation=cv2.INTER_LINEAR)
    for split, ids in (("train", tr), ("valid", va)):
        for i in ids:
            folder = out / split / str(d.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"digit_{i:04d}.png"), big[i])
    base = {}
    for what, feats in (("raw 8x8 pixels", d.data), ("28x28 pixels", big.reshape(len(idx), -1) / 255.0)):
        if what not in baselines:
            continue
        clf = LogisticRegression(max_iter=5000).fit(feats[tr], d.target[tr])
        base[what] = float(clf.score(feats[va], d.target[va]))
    return out / "train", out / "valid", base


# ---- features ---------------------------------------------------------------------------------------------
def _cache_key(model_files: Sequence[str], layer: str, pre, paths: Sequence[Path], precision: str) -> str:
    h = hashlib.sha256()
    for f in model_files:
        if not f or not os.path.isfile(f):
            h.update(f"{f}|".encode())
            continue
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}".encode())
    h.update(f"{layer}|{pre!r}|{precision}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def extract_features(net, layer: str, paths: Sequence[Path], pre, *, batch: int = 64, precision: str = "float64",
                     cache_dir: Path | None = None, model_files: Sequence[str] = ()) -> tuple[np.ndarray, bool]:
    """Features at ``layer`` for every image, flattened to ``(N, D)`` (float64); cached in
    ``cache_dir`` when given. Returns (features, whether they came from the cache). Images are
    decoded by :func:`refnet.pipelines.read_image` (a picture over the memory budget is refused
    from its header, before decoding)."""
    from refnet.pipelines import read_image

    key = ""
    if cache_dir is not None:  # the net's own source file(s) too: a zoo model gives no model_files
        key = _cache_key(list(model_files) + [str(getattr(net.graph, "source", ""))], layer, pre, paths, precision)
    if cache_dir is not None:
        f = Path(cache_dir) / f"features-{key}.npz"
        if f.is_file():
            return np.load(f)["features"], True
    rows = []
    for s in range(0, len(paths), batch):
        blobs = []
        for p in paths[s:s + batch]:
            blobs.append(pre.blob(read_image(p)))
        out = net.forward(np.concatenate(blobs), outputs=[layer], precision=precision)[layer]
        rows.append(np.asarray(out, np.float64).reshape(len(blobs), -1))
    feats = np.concatenate(rows)
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        np.savez(Path(cache_dir) / f"features-{key}.npz", features=feats)
    return feats, False


def check_feature_memory(net, layer: str, first_image: Path, pre, n_images: int) -> int:
    """Features per image at ``layer`` (the net's shapes at the blob of ``first_image``); BudgetError
    before any extraction when the float64 features of ``n_images`` images, held about three times
    over (the per-batch rows, the joined matrix, its standardised copy for the head), exceed the
    memory budget."""
    from refnet.pipelines import read_image
    from refnet.runtime.budget import check_memory

    shape = pre.blob(read_image(first_image)).shape
    per = int(np.prod(net.infer_shapes({net.input_names[0]: shape})[layer][1:]))
    check_memory(3 * 8 * per * int(n_images), f"holding the features at {layer} ({per:,} per image, {n_images} images, "
                 "float64)", layer=layer)
    return per


# ---- the head ---------------------------------------------------------------------------------------------
@dataclass
class Head:
    """A trained head: InnerProduct weights in Caffe layout (out, in), on standardised features."""

    mean: np.ndarray
    std: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]
    history: list[float] = field(default_factory=list)

    def net(self, params: Sequence[tuple[np.ndarray, np.ndarray]] | None = None):
        """The head as a refnet Net with input ``features`` (N, D)."""
        from refnet.graph import Graph, Node
        from refnet.net import Net

        params = list(params or self.layers)
        nodes = [Node(HEAD[0], "linear", ("features",), (HEAD[0],), {"axis": 1},
                      {"weight": params[0][0], "bias": params[0][1]})]
        last = HEAD[0]
        if len(params) == 2:
            nodes += [Node(HEAD[1], "relu", (HEAD[0],), (HEAD[1],)),
                      Node(HEAD[2], "linear", (HEAD[1],), (HEAD[2],), {"axis": 1},
                           {"weight": params[1][0], "bias": params[1][1]})]
            last = HEAD[2]
        nodes.append(Node(HEAD[3], "softmax", (last,), (HEAD[3],), {"axis": 1}))
        return Net(Graph(nodes, ("features",), {"features": (1, params[0][0].shape[1])}))

    def logits_name(self) -> str:
        return HEAD[2] if len(self.layers) == 2 else HEAD[0]

    def predict(self, feats: np.ndarray) -> np.ndarray:
        z = (feats - self.mean) / self.std
        return self.net().forward(z, outputs=[HEAD[3]], precision="float64")[HEAD[3]]

    def folded(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The layers with the standardisation folded into the first: ``W' = W / std``,
        ``b' = b - W' mean``, so the head reads the raw backbone features."""
        w, b = self.layers[0]
        w2 = w / self.std[None, :]
        return [(w2, b - w2 @ self.mean)] + list(self.layers[1:])


def train_head(x: np.ndarray, y: np.ndarray, n_classes: int, *, hidden: int = 0, weight_decay: float = 1e-3,
               max_iter: int = 300, seed: int = 0) -> Head:
    """Fit the head by L-BFGS-B on mean cross-entropy + weight_decay/2 ||W||^2; gradients by net.backward."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    z = (x - mean) / std
    dims = [z.shape[1]] + ([hidden] if hidden else []) + [n_classes]
    shapes = []
    for a, b in zip(dims[:-1], dims[1:]):
        shapes += [(b, a), (b,)]
    init = []
    for s in shapes:
        init.append(rng.normal(0, np.sqrt(2.0 / s[1]), s) if len(s) == 2 else np.zeros(s))
    sizes = [int(np.prod(s)) for s in shapes]
    onehot = np.eye(n_classes)[y]
    head = Head(mean, std, [])
    n = len(y)

    def unpack(theta):
        arrs, o = [], 0
        for s, k in zip(shapes, sizes):
            arrs.append(theta[o:o + k].reshape(s))
            o += k
        return [(arrs[i], arrs[i + 1]) for i in range(0, len(arrs), 2)]

    def fun(theta):
        params = unpack(theta)
        net = head.net(params)
        logits_name = HEAD[2] if hidden else HEAD[0]
        names = [HEAD[0]] + ([HEAD[2]] if hidden else [])
        tape_out = net.forward(z, outputs=[logits_name], precision="float64")[logits_name]
        zmax = tape_out - tape_out.max(axis=1, keepdims=True)
        logp = zmax - np.log(np.exp(zmax).sum(axis=1, keepdims=True))
        loss = -float(np.sum(onehot * logp)) / n
        g = net.backward(z, {logits_name: (np.exp(logp) - onehot) / n}, wrt=names)
        grads = []
        for name, (w, _b) in zip(names, params):
            loss += 0.5 * weight_decay * float(np.sum(w * w))
            grads += [g.params[name]["weight"] + weight_decay * w, g.params[name]["bias"]]
        head.history.append(loss)
        return loss, np.concatenate([a.reshape(-1) for a in grads])

    res = minimize(fun, np.concatenate([a.reshape(-1) for a in init]), jac=True, method="L-BFGS-B",
                   options={"maxiter": int(max_iter)})
    head.layers = unpack(res.x)
    return head


def head_layers(head: Head, bottom: str, n_classes: int, taken: Sequence[str] = ()):
    """The head as Caffe layers (refnet.caffe_deploy.NewLayer) reading blob ``bottom``; its layer
    and blob names are :data:`HEAD`'s, with ``_new`` appended while one is in ``taken`` (the kept
    backbone's layer and blob names: cut at a layer named ``prob``, the head's Softmax must not
    write the backbone's ``prob`` again). The last layer's top is the head's output."""
    from refnet.caffe_deploy import NewLayer

    used = set(taken)

    def fresh(name: str) -> str:
        while name in used:
            name += "_new"
        used.add(name)
        return name

    fc1, relu, fc2, prob = (fresh(n) for n in HEAD)
    out = []
    folded = head.folded()
    src = bottom
    for i, (w, b) in enumerate(folded):
        name = fc1 if i == 0 else fc2
        out.append(NewLayer(name, "InnerProduct", f'  bottom: "{src}"\n  top: "{name}"\n'
                            f"  inner_product_param {{ num_output: {w.shape[0]} }}", (w, b)))
        src = name
        if i == 0 and len(folded) == 2:
            out.append(NewLayer(relu, "ReLU", f'  bottom: "{name}"\n  top: "{name}"'))
    out.append(NewLayer(prob, "Softmax", f'  bottom: "{src}"\n  top: "{prob}"'))
    return out


# ---- the written model ------------------------------------------------------------------------------------
def top_blob(prototxt: str, layer: str) -> str:
    """The top blob of ``layer`` in a deploy prototxt (where a head written after it reads)."""
    from refnet.caffe_deploy import _layer_messages

    for L in _layer_messages(Path(prototxt)):
        if L.name == layer:
            return L.top[0]
    raise TransferError(f"no layer {layer!r} in {prototxt}")


def kept_names(prototxt: str, layer: str) -> set[str]:
    """The layer and blob names of the part of a deploy prototxt kept when it is cut at ``layer``
    (names a head written after it must not reuse)."""
    from refnet.caffe_deploy import _layer_messages, _needed

    layers = _layer_messages(Path(prototxt))
    if layer not in [L.name for L in layers]:
        raise TransferError(f"no layer {layer!r} in {prototxt}")
    names = set()
    for i in _needed(layers, layer):
        names |= {layers[i].name, *layers[i].top, *layers[i].bottom}
    return names


def check_written(proto: Path, model: Path, paths: Sequence[Path], pre, expected: np.ndarray,
                   precision: str = "float64", output: str = "prob") -> tuple[int, int]:
    """Classes predicted by refnet and by cv2.dnn on the written model; both must equal ``expected``
    (the head's own predictions). Returns (#images where all three agree, #images)."""
    import cv2

    import refnet
    from refnet.pipelines import read_image

    mine = refnet.load(proto, model)
    theirs = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    agree = 0
    for s in range(0, len(paths), 64):
        blob = np.concatenate([pre.blob(read_image(p)) for p in paths[s:s + 64]])
        blob = blob.astype(np.float32)
        a = mine.forward(blob, outputs=[output], precision=precision)[output].reshape(len(blob), -1).argmax(axis=1)
        theirs.setInput(blob)
        b = theirs.forward(output).reshape(len(blob), -1).argmax(axis=1)
        agree += int(np.sum((a == b) & (a == np.asarray(expected[s:s + 64]))))
    return agree, len(paths)
