"""What task a net is built for, where the net itself says it; and refusing a task it cannot do.

:func:`infer_task` reads the ops that produce the net's outputs: a DetectionOutput (SSD, or a
two-stage Faster R-CNN / R-FCN where the net is fed data + im_info) or Darknet region/yolo heads
-> ``detect``; Ultra-Light-Fast's ``boxes`` + ``scores`` heads ->
``face``; a softmax (or fully connected layer) over one vector per image -> ``classify``. Anything
else is left to the user (``--task``). :func:`check_task` refuses a task whose decoder cannot
read the outputs, e.g. ``classify`` on a YOLO net, with a message that names what the net is.
"""

from __future__ import annotations

from typing import Any

from refnet.pipelines import PipelineError

__all__ = ["infer_task", "check_task", "TaskMismatchError", "MTCNN_STAGES"]

# zoo entries that are one stage of the MTCNN cascade and cannot find faces in a whole image alone
MTCNN_STAGES = {"mtcnn-det2": "R-Net (stage 2: scores 24x24 crops proposed by P-Net)",
                "mtcnn-det3": "O-Net (stage 3: scores 48x48 crops kept by R-Net, with 5 landmarks)",
                "mtcnn-det4": "L-Net (landmark refinement on five 24x24 patches around O-Net's landmarks)"}


class TaskMismatchError(PipelineError):
    """The asked task cannot be decoded from this net's outputs."""


def _ops(net: Any) -> dict[str, str]:
    out = {}
    for n in net.output_names:
        try:
            out[n] = net.graph.node(n.split(":")[0]).op
        except KeyError:
            out[n] = ""
    return out


def _vector_per_image(net: Any, name: str) -> int | None:
    """The class count when output ``name`` is one vector per image ((N, C) or (N, C, 1, 1)), else None."""
    try:
        shapes = net.infer_shapes()
    except Exception:  # noqa: BLE001 (undeclared input shapes: nothing to infer from)
        return None
    s = shapes.get(name)
    if s is None or len(s) < 2:
        return None
    if all(int(d) == 1 for d in s[2:]) and int(s[1]) > 1:
        return int(s[1])
    return None


def infer_task(net: Any) -> tuple[str | None, str]:
    """(task, why) from the net's output ops; (None, what was found) when the net does not say."""
    ops = _ops(net)
    kinds = set(ops.values())
    if "detection_output" in kinds:
        from refnet.two_stage import is_two_stage

        if is_two_stage(net):
            return "detect", ("its output is a DetectionOutput layer over region proposals (a two-stage "
                              "detector: Faster R-CNN / R-FCN, fed data + im_info)")
        return "detect", "its output is a DetectionOutput layer (SSD)"
    if kinds & {"region", "yolo"}:
        return "detect", "its outputs are Darknet region/yolo detection heads"
    if {"boxes", "scores"} <= set(ops):
        return "face", "its outputs are Ultra-Light-Fast's boxes + scores heads"
    if len(ops) == 1:
        (name, op), = ops.items()
        if op in ("softmax", "log_softmax", "linear"):
            c = _vector_per_image(net, name)
            if c is not None:
                return "classify", f"its output {name!r} is a {c}-way {op.replace('_', ' ')} per image"
    return None, f"outputs {list(ops)} (ops {sorted(kinds)})"


def check_task(net: Any, task: str, entry: Any = None) -> None:
    """Raise :class:`TaskMismatchError` when ``task`` cannot be decoded from the net's outputs:
    classify/segment/stylize on a detection net, detect/face on a classifier, or an MTCNN stage
    other than P-Net asked to find faces in a whole image."""
    name = getattr(entry, "name", None)
    if name in MTCNN_STAGES:
        raise TaskMismatchError(
            f"{name} is MTCNN's {MTCNN_STAGES[name]}: it cannot find faces in a whole image on its own; "
            f"run the cascade with `refnet run --zoo mtcnn --image IMG` (P-Net, R-Net and O-Net together)")
    inferred, why = infer_task(net)
    if inferred is None or task == inferred or {task, inferred} <= {"detect", "face"}:
        return
    verb = {"detect": "decode detections", "face": "decode detections", "classify": "read class scores",
            "segment": "read a class map", "stylize": "read an image"}[task]
    raise TaskMismatchError(f"--task {task} does not fit this net: cannot {verb} from the outputs "
                            f"{list(net.output_names)}: {why}, so it is a {inferred} net; use --task {inferred}"
                            + (" (or face)" if inferred == "detect" else ""))
