"""The command line's top level: exit statuses, one-line errors, ``--debug``, output checks.

Exit statuses (DESIGN.md): 0 success / agree, 1 DIFFER (``compare`` only), 2 a user error or
refused input (missing or unreadable file, malformed model, bad option, budget exceeded,
network failure, an image OpenCV cannot read), 3 an internal error (a bug: please report it
with the ``--debug`` traceback), 130 interrupted (Ctrl-C). Every error prints one line on
stderr, ``refnet: error: ...``; ``--debug`` (anywhere on the command line, or
``REFNET_DEBUG=1``) shows the traceback instead.

Outputs (``--json``, ``--plot``, ``-o``/``--out``) are checked before the work starts: a
missing folder, a folder that is not writable or an output path that is a folder fails at
once, not after minutes of computing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refnet.errors import RefnetError

__all__ = ["EXIT_OK", "EXIT_DIFFER", "EXIT_USER", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "split_debug",
           "classify", "check_output", "check_outputs", "OutputError", "version_text"]

EXIT_OK, EXIT_DIFFER, EXIT_USER, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class OutputError(RefnetError):
    """An output path that cannot be written (checked before the work)."""


def _network_errors() -> tuple[type, ...]:
    """urllib's and http.client's exception types, if a command imported them (not imported at
    start-up: an exception of theirs can only come from code that did)."""
    mods = (sys.modules.get("urllib.error"), sys.modules.get("http.client"))
    return tuple(t for t in (getattr(mods[0], "URLError", None), getattr(mods[1], "HTTPException", None)) if t)


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without its ``--debug`` flags (accepted before or after the subcommand), and
    whether one was there (or ``REFNET_DEBUG`` is set to a non-empty value other than 0)."""
    args = list(argv)
    rest = [a for a in args[: args.index("--")]] if "--" in args else args
    debug = "--debug" in rest
    if debug:
        cut = args.index("--") if "--" in args else len(args)
        args = [a for a in args[:cut] if a != "--debug"] + args[cut:]
    env = os.environ.get("REFNET_DEBUG", "")
    return args, debug or (env not in ("", "0"))


def version_text() -> str:
    """``refnet X (python Y, numpy Z, numba W, opencv V)`` from package metadata (nothing imported)."""
    from importlib import metadata

    import refnet

    parts = [f"python {sys.version.split()[0]}"]
    for dist, name in (("numpy", "numpy"), ("numba", "numba"), ("opencv-python", "opencv")):
        try:
            parts.append(f"{name} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return f"refnet {refnet.__version__} ({', '.join(parts)})"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_message(e: OSError) -> str:
    what = e.strerror or type(e).__name__
    if e.filename is not None:
        return f"{what}: {e.filename}" + (f" -> {e.filename2}" if e.filename2 is not None else "")
    return _one_line(str(e)) or what


def _cv2_message(e: BaseException) -> str:
    # "OpenCV(4.x) /path/file.cpp:123: error: (-215:Assertion failed) cond in function 'f'\n"
    text = _one_line(str(e))
    if ": error: " in text:
        text = text.split(": error: ", 1)[1]
    return f"OpenCV: {text}"


def classify(e: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) for an exception that reached the top level."""
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(e, RefnetError):
        return EXIT_USER, _one_line(str(e))
    if isinstance(e, MemoryError):
        return EXIT_USER, ("out of memory (the input needs more than this machine gives; refnet's budgets "
                           "refuse such work up front when REFNET_MEMORY_BUDGET is set lower)")
    if isinstance(e, _network_errors()):
        return EXIT_USER, f"network: {_one_line(str(e)) or type(e).__name__}"
    if isinstance(e, OSError):  # missing/unreadable/unwritable files, folders, full disk, sockets
        return EXIT_USER, _os_message(e)
    if isinstance(e, KeyError):
        return EXIT_USER, _one_line(e.args[0] if e.args else "missing key")
    if isinstance(e, (ValueError, UnicodeError)):
        return EXIT_USER, _one_line(str(e))
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and isinstance(e, cv2.error):
        return EXIT_USER, _cv2_message(e)
    if isinstance(e, RecursionError):
        return EXIT_USER, "input nested too deeply (recursion limit)"
    msg = _one_line(str(e))
    return EXIT_INTERNAL, (f"internal error: {type(e).__name__}{': ' + msg if msg else ''} "
                           "(a refnet bug; rerun with --debug for the traceback and report it)")


# ---- outputs, checked before the work ----------------------------------------------------------------
def check_output(path: str | os.PathLike, kind: str = "file", what: str = "output") -> None:
    """OutputError unless ``path`` can be written: ``kind`` "file" (an existing folder there is
    an error), "dir" (an existing folder, or a new one in a writable folder), "file_or_dir" (a
    file, or an existing folder to write into: run's -o, a folder with several images) or
    "prefix" (``<path>.<ext>`` files: the folder of the prefix)."""
    p = Path(path)
    if kind == "file_or_dir":
        kind = "dir" if p.is_dir() else "file"
    if kind == "dir":
        if p.exists():
            if not p.is_dir():
                raise OutputError(f"cannot write {what} into {p}: it is not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise OutputError(f"cannot write {what} into {p}: permission denied")
            return
    elif kind == "file" and p.is_dir():
        raise OutputError(f"cannot write {what} {p}: it is a folder")
    elif kind == "file" and p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"cannot write {what} {p}: permission denied")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {what} {p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {p}: folder {parent} is not writable")


# the output options of the subcommands: (attribute, kind); demo's --out is a folder
_OUTPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "compare": (("json", "file"), ("plot", "file")),
    "info": (("json", "file"),),
    "bench": (("json", "file"),),
    "run": (("out", "file_or_dir"), ("json", "file")),  # -o: a picture, or the folder the pictures go into
    "generate": (("out", "prefix"),),
    "demo": (("out", "dir"),),
    "convert": (("output", "file"), ("json", "file")),
    "stylize": (("out", "file"),),
    "explain": (("out", "file"),),
    "transfer": (("out", "prefix"), ("json", "file")),
}


def check_outputs(args: Any) -> None:
    """Check every output option of the parsed subcommand ``args`` before it runs."""
    for attr, kind in _OUTPUTS.get(getattr(args, "cmd", None) or "", ()):
        value = getattr(args, attr, None)
        if value:
            flag = {"out": "-o/--out", "output": "-o/--output"}.get(attr, f"--{attr}")
            check_output(value, kind, flag)
    if getattr(args, "cmd", None) == "run" and not getattr(args, "out", None):
        images = getattr(args, "image", None) or ["out"]
        first = images if isinstance(images, (str, Path)) else images[0]
        check_output(Path(first).stem + ".png", "file",
                     "the picture (default: into the current folder; choose another with -o)")
