"""``refnet stylize | transfer | explain``: the applications of refnet's own gradients.

The library functions live in :mod:`refnet.gatys` (style transfer by pixel optimisation),
:mod:`refnet.transfer` (a new head on a frozen backbone) and :mod:`refnet.explain` (saliency).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refnet.cli.common import add_model_args

__all__ = ["add_parsers", "stylize_command", "transfer_command", "explain_command"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``refnet stylize``, ``refnet transfer`` and ``refnet explain``."""
    _add_stylize(sub)
    _add_transfer(sub)
    _add_explain(sub)


def _add_precision(s: argparse.ArgumentParser, default: str, help: str) -> None:
    """``--precision``: which kernels (float32 fast path or float64 reference) the passes run on."""
    s.add_argument("--precision", choices=("float32", "float64"), default=default, help=help)


# ---- refnet stylize ----------------------------------------------------------------------------------------
def stylize_command(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from refnet import gatys, pipelines
    from refnet.errors import ShapeError

    if not args.optimize:
        raise gatys.StylizeError("stylize needs --optimize CONTENT STYLE (pixel optimisation; feed-forward "
                                 "fast-neural-style models run with `refnet run --task stylize`)")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.size and min(args.size) < 1:
        raise ValueError(f"--size must be two positive numbers W H, got {' '.join(map(str, args.size))}")
    if args.max_side < 1:
        raise ValueError(f"--max-side must be >= 1, got {args.max_side}")
    content_img = pipelines.read_image(args.optimize[0])
    style_img = pipelines.read_image(args.optimize[1])
    net, _, pre = gatys.load_model(args.model or ([] if args.zoo else ["builtin:vgg19"]), args.zoo)
    if len(net.input_names) != 1:
        raise gatys.StylizeError(f"the model has inputs {list(net.input_names)}; stylize needs a one-input image "
                                 "net")
    h0, w0 = content_img.shape[:2]
    if args.size:
        size = (int(args.size[0]), int(args.size[1]))
    else:
        f = min(1.0, args.max_side / max(h0, w0))
        size = gatys.fit_size(net, (max(16, int(round(w0 * f))), max(16, int(round(h0 * f)))))
    xc = pre.blob(content_img, size).astype(np.float64)
    xs = pre.blob(style_img, size).astype(np.float64)
    if xc.shape[1] != 3:
        raise gatys.StylizeError(f"stylize works on 3-channel inputs; the model's blob has {xc.shape[1]} "
                                 "channel(s)")
    try:
        content_layer, style_layers = gatys.default_layers(net, xc.shape)
    except ShapeError as e:
        raise gatys.StylizeError(f"the model does not take a {size[0]}x{size[1]} image: {e}") from e
    content_layer = args.content_layer or content_layer
    style_layers = args.style_layers or style_layers
    weights = tuple(args.weights) if args.weights else gatys.DEFAULT_WEIGHTS
    print(f"stylize: {size[0]}x{size[1]} pixels, content layer {content_layer}, style layers "
          f"{' '.join(style_layers)}, weights content {weights[0]:g} style {weights[1]:g} tv {weights[2]:g}, "
          f"L-BFGS-B up to {args.steps} steps, {args.precision}")
    try:
        loss = gatys.GatysLoss(net, xc, xs, content_layer, style_layers, weights, args.precision)
    except ShapeError as e:
        raise gatys.StylizeError(f"the model does not take a {size[0]}x{size[1]} image: {e}") from e

    def show(s: gatys.Step) -> None:
        print(f"step {s.step:4d}  total {s.total:.6e}  content {s.content:.4e}  style {s.style:.4e}  "
              f"tv {s.tv:.4e}  ({s.evals} evals, {s.seconds:.1f} s)", flush=True)

    res = gatys.optimize(loss, xc, gatys.pixel_bounds(pre, xc.shape), args.steps, show)
    img, _ = pipelines.stylized_image(res.blob, pre)
    out = Path(args.out or f"{Path(args.optimize[0]).stem}_stylized.png")
    if not cv2.imwrite(str(out), img):
        raise FileNotFoundError(f"could not write {out}")
    first, final = res.history[0].total, res.history[-1].total
    print(f"total loss {first:.6e} -> {final:.6e} in {len(res.history) - 1} steps ({res.message})")
    print(f"wrote {out}")
    return 0


def _add_stylize(sub: argparse._SubParsersAction) -> None:
    from refnet.gatys import DEFAULT_WEIGHTS

    s = sub.add_parser("stylize", help="Gatys style transfer: optimise the pixels (content + Gram style + TV loss)",
                       description="Optimise an image's pixels so that its features at a content layer match the "
                                   "content image and its Gram matrices at style layers match the style image "
                                   "(Gatys et al.), with a total-variation term, by L-BFGS-B through refnet's own "
                                   "gradients. Prints the three loss terms per step and writes the image.")
    s.add_argument("--optimize", nargs=2, metavar=("CONTENT", "STYLE"), help="content and style images")
    s.add_argument("--model", nargs="+", metavar="MODEL_FILE",
                   help="model files, or builtin:vgg19 (VGG-19 conv layers with seeded weights; the default)")
    s.add_argument("--zoo", metavar="NAME", help="a zoo model instead of --model files")
    s.add_argument("--content-layer", metavar="L", help="content layer (default: the recipe's, see README)")
    s.add_argument("--style-layers", nargs="+", metavar="L", help="style layers (default: the recipe's)")
    s.add_argument("--weights", nargs=3, type=float, metavar=("A", "B", "C"),
                   help=f"content, style, total-variation weights (default {' '.join(map(str, DEFAULT_WEIGHTS))})")
    s.add_argument("--steps", type=int, default=50, help="L-BFGS iterations (default 50)")
    s.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="working size (default: --max-side)")
    s.add_argument("--max-side", type=int, default=192, help="longer side of the working size (default 192)")
    _add_precision(s, "float32", "kernels of the forward/backward passes (losses are summed in float64)")
    s.add_argument("-o", "--out", metavar="OUT.png", help="image to write (default <content stem>_stylized.png)")
    s.set_defaults(func=stylize_command)


# ---- refnet transfer ---------------------------------------------------------------------------------------
def _report(split: str, pred: Any, y: Any, names: Sequence[str]) -> float:
    import numpy as np

    acc = float(np.mean(pred == y))
    print(f"{split} accuracy {acc:.4f} ({int(np.sum(pred == y))}/{len(y)})")
    return acc


def transfer_command(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from refnet import pipelines, transfer
    from refnet.caffe_deploy import write_cut_model

    if args.demo_digits:
        tr, va, base = transfer.write_digits_folders(args.demo_digits, seed=args.seed)
        print(f"wrote {tr} and {va} (scikit-learn digits, 8x8 upscaled into 28x28)")
        for k, v in base.items():
            print(f"linear classifier (logistic regression) on {k}: valid accuracy {v:.4f}")
        return 0
    if not (args.layer and args.train and args.valid):
        raise transfer.TransferError("transfer needs --layer L --train DIR --valid DIR (or --demo-digits DIR)")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.hidden < 0:
        raise ValueError(f"--hidden must be >= 0 (0: no hidden layer), got {args.hidden}")
    if not args.weight_decay >= 0:
        raise ValueError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    net, entry, _ = pipelines.resolve_model(args.model, args.zoo)
    if len(net.input_names) != 1:
        raise transfer.TransferError(f"the model has inputs {list(net.input_names)}; transfer takes a one-input "
                                     "image backbone")
    pre = entry.preprocess if entry is not None else pipelines.default_preprocess(net, "classify")
    if args.layer not in net.layer_names:
        raise transfer.TransferError(f"no layer {args.layer!r}; layers are {list(net.layer_names)}")
    tr_paths, ytr, classes = transfer.list_images(args.train)
    va_paths, yva, _ = transfer.list_images(args.valid, classes)
    files = [str(f) for f in (args.model or [])]
    if args.out and (net.graph.framework != "caffe" or len(files) != 2):
        raise transfer.TransferError("-o writes a Caffe deploy model: give the backbone as prototxt + "
                                     "caffemodel files")
    transfer.check_feature_memory(net, args.layer, tr_paths[0], pre, len(tr_paths) + len(va_paths))
    cache = Path(args.cache) if args.cache else Path(args.train).resolve().parent / ".refnet-features"
    try:  # before the extraction, not when its result is saved
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise transfer.TransferError(f"cannot use the feature cache folder {cache}: {e.strerror or e}") from e
    xtr, hit_tr = transfer.extract_features(net, args.layer, tr_paths, pre, cache_dir=cache, model_files=files,
                                   precision=args.precision)
    xva, hit_va = transfer.extract_features(net, args.layer, va_paths, pre, cache_dir=cache, model_files=files,
                                   precision=args.precision)
    print(f"features at {args.layer}: {xtr.shape[1]} per image, {len(tr_paths)} train / {len(va_paths)} valid "
          f"images, {len(classes)} classes ({'cached' if hit_tr and hit_va else 'extracted'}, {cache})")
    head = transfer.train_head(xtr, ytr, len(classes), hidden=args.hidden, weight_decay=args.weight_decay,
                      max_iter=args.steps, seed=args.seed)
    print(f"head: {' -> '.join(str(w.shape[1]) for w, _ in head.layers)} -> {len(classes)}, L-BFGS-B "
          f"{len(head.history)} evaluations, loss {head.history[0]:.4f} -> {head.history[-1]:.4f}")
    ptr = head.predict(xtr).argmax(axis=1)
    pva_prob = head.predict(xva)
    pva = pva_prob.argmax(axis=1)
    _report("train", ptr, ytr, classes)
    acc = _report("valid", pva, yva, classes)
    conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(conf, (yva, pva), 1)
    print("confusion (rows: true class, columns: predicted):")
    print("      " + " ".join(f"{c[:5]:>5s}" for c in classes))
    for i, c in enumerate(classes):
        print(f"{c[:5]:>5s} " + " ".join(f"{v:5d}" for v in conf[i]))
    wrong = np.flatnonzero(pva != yva)
    print(f"{len(wrong)} misclassified valid images:")
    for i in wrong:
        print(f"  {va_paths[i]}  true {classes[yva[i]]}  predicted {classes[pva[i]]} ({pva_prob[i, pva[i]]:.3f})")
    result = {"layer": args.layer, "classes": classes, "train_accuracy": float(np.mean(ptr == ytr)),
              "valid_accuracy": acc, "wrong": [str(va_paths[i]) for i in wrong]}
    if args.out:
        proto = next(f for f in files if f.endswith(".prototxt"))
        model = next(f for f in files if f.endswith(".caffemodel"))
        bottom_net = transfer.top_blob(proto, args.layer)
        head_net = transfer.head_layers(head, bottom_net, len(classes), transfer.kept_names(proto, args.layer))
        p, m, _ = write_cut_model(proto, model, args.layer, head_net, args.out)
        agree = transfer.check_written(p, m, va_paths, pre, pva, args.precision, output=head_net[-1].name)
        renamed = f" (head output {head_net[-1].name!r})" if head_net[-1].name != transfer.HEAD[-1] else ""
        print(f"wrote {p} and {m}{renamed}: refnet and cv2.dnn predict the same class for {agree[0]}/{agree[1]} "
              "valid images")
        result.update(prototxt=str(p), caffemodel=str(m), cv2_agree=agree[0])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def _add_transfer(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("transfer", help="transfer learning: train a new head on a frozen backbone's features",
                       description="Extract features at --layer for the images of --train/--valid (one sub-folder "
                                   "per class), train InnerProduct [+ReLU+InnerProduct] + Softmax with refnet's own "
                                   "gradients (L-BFGS-B), report accuracies and misclassified images, and write "
                                   "the backbone up to the layer plus the head as a Caffe deploy model (-o NEW).")
    add_model_args(s, "a zoo model as the backbone", "the backbone (.prototxt + .caffemodel); or --zoo")
    s.add_argument("--layer", metavar="L", help="the layer whose output is the feature vector")
    s.add_argument("--train", metavar="DIR", help="training images, DIR/<class>/<image>")
    s.add_argument("--valid", metavar="DIR", help="held-out images, same classes")
    s.add_argument("-o", "--out", metavar="NEW", help="write NEW.prototxt + NEW.caffemodel (backbone up to L + head)")
    s.add_argument("--hidden", type=int, default=0, help="units of a hidden InnerProduct+ReLU (default 0: none)")
    s.add_argument("--weight-decay", type=float, default=1e-3, help="L2 penalty on the weights (default 1e-3)")
    s.add_argument("--steps", type=int, default=300, help="L-BFGS-B iterations (default 300)")
    s.add_argument("--seed", type=int, default=0)
    _add_precision(s, "float64", "refnet kernels for the backbone features and the check of the written model")
    s.add_argument("--cache", metavar="DIR", help="feature cache folder (default: <train>/../.refnet-features)")
    s.add_argument("--json", metavar="PATH", help="write accuracies and misclassified images as JSON")
    s.add_argument("--demo-digits", metavar="DIR", help="write scikit-learn's digits as DIR/train and DIR/valid "
                                                        "class folders, print the linear baselines, and exit")
    s.set_defaults(func=transfer_command)


# ---- refnet explain ----------------------------------------------------------------------------------------
def explain_command(args: argparse.Namespace) -> int:
    import numpy as np

    from refnet import explain, pipelines

    image = pipelines.read_image(args.image)
    net, entry, labels = pipelines.resolve_model(args.model, args.zoo)
    task = entry.task if entry is not None else "classify"
    pre = entry.preprocess if entry is not None else pipelines.default_preprocess(net, task)
    if pre.layout != "NCHW":
        raise explain.ExplainError(f"explain needs an NCHW blob; this model's preprocessing uses {pre.layout}")
    blob = pre.blob(image).astype(np.float64)
    s = explain.saliency(net, blob, args.cls, args.precision)
    offset = entry.label_offset if entry is not None else 0
    name = labels[s.cls - offset] if labels and 0 <= s.cls - offset < len(labels) else str(s.cls)
    text = f"{s.target} ({name}) score {s.score:.3g}"
    print(f"explain: {text}; saliency = |input x gradient| summed over channels, blob {blob.shape}")
    peak = np.unravel_index(int(np.argmax(s.map)), s.map.shape)
    print(f"  gradient norm {float(np.linalg.norm(s.grad)):.4g}, saliency peak at blob (row {peak[0]}, col {peak[1]})")
    out = Path(args.out or f"{Path(args.image).stem}_explain.png")
    region = pipelines.blob_region(image.shape[:2], pre)
    f = max(1, -(-256 // min(image.shape[:2])))  # small images (LeNet's 28x28) are drawn enlarged
    if f > 1:
        import cv2

        image = cv2.resize(image, (image.shape[1] * f, image.shape[0] * f), interpolation=cv2.INTER_NEAREST)
        region = tuple(v * f for v in region)
    pipelines.write_image(out, explain.overlay(image, s, region, text))
    print(f"wrote {out}")
    return 0


def _add_explain(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("explain", help="gradient x input saliency of a class or detection score, drawn on the image",
                       description="Back-propagate one class score (classification: its logit; SSD: a detection's "
                                   "confidence; segmentation: a class's pixels) to the input with refnet's own "
                                   "gradients and draw |input x gradient| over the image.")
    add_model_args(s, "a zoo model (files, preprocessing, labels)", "model files; or --zoo NAME")
    s.add_argument("--image", required=True, help="input image")
    s.add_argument("--class", dest="cls", type=int, metavar="K", help="class to explain (default: the top one)")
    _add_precision(s, "float64", "kernels of the forward/backward passes (default float64, the reference)")
    s.add_argument("-o", "--out", metavar="OUT.png", help="picture to write (default <image stem>_explain.png)")
    s.set_defaults(func=explain_command)
