"""Where numba keeps refnet's compiled kernels, chosen once before numba is imported.

The one location, the same for ``make`` and for direct runs:

1. ``$REFNET_NUMBA_CACHE``, else ``$NUMBA_CACHE_DIR``, when set;
2. else ``$XDG_CACHE_HOME/refnet/numba``, else ``~/.cache/refnet/numba``;
3. if that cannot be used: a private folder ``<tmp>/refnet-numba-<uid>``, else a fresh
   ``mkdtemp`` folder;
4. else no cache at all (kernels compile on every run).

A fallback (3 or 4) prints one line on stderr saying why. The folder is created mode 0700;
an existing one must be a directory owned by this user and writable by nobody else.

Why so strict: numba reads its cache files with ``pickle``, and unpickling runs code. Whoever
can write into the cache folder can run code as the refnet user at its next start. A private
folder owned by the user (0700, no group/other write bit, not owned by someone else) is the
mitigation; a folder that fails the check is refused, not repaired. The folders above it are
not checked: anyone who can replace ``~/.cache`` can replace ``~/.bashrc`` too.

numba checks a cached kernel against its own source file only (mtime and size), while a
kernel compiles in the jitted helpers it calls from other files: after an edit to
``_poolrow.py`` alone, ``window.py``'s cached callers would run the old helper. So every
refnet kernel's stamp also carries one digest of all the kernel package's files
(:func:`package_stamp`): any change in the package recompiles its kernels once.

A corrupt cache (truncated or garbled index/data files) is a cache miss: the kernel is
recompiled and the entry rewritten (:func:`install_numba_hooks`), never an error. The first
time a refnet kernel actually compiles in a process, ``compiling kernels (first run only)...``
goes to stderr (a cache miss is the cheap signal: no timing, no directory scan).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

__all__ = ["CacheChoice", "choose_cache_dir", "check_private_dir", "install_numba_hooks", "package_stamp",
           "CACHE_ENV"]

CACHE_ENV = "REFNET_NUMBA_CACHE"
COMPILE_NOTICE = "refnet: compiling kernels (first run only)..."


class CacheChoice:
    """The chosen folder (None: uncached) and the one line to print about a fallback (None: quiet)."""

    def __init__(self, path: str | None, note: str | None) -> None:
        self.path = path
        self.note = note

    def __repr__(self) -> str:
        return f"CacheChoice({self.path!r}, {self.note!r})"


def check_private_dir(path: str | os.PathLike, create: bool = True) -> str | None:
    """Make sure ``path`` is a private writable folder: None if so, else why not (one phrase).

    Creates it (and missing parents) with mode 0700 when ``create``. Refuses a non-directory,
    a folder owned by another user, one with group or other write permission, and one this
    process cannot write into."""
    p = Path(path)
    try:
        if create and not p.exists():
            old = os.umask(0o077)
            try:
                p.mkdir(mode=0o700, parents=True, exist_ok=True)
            finally:
                os.umask(old)
        st = os.stat(p)  # follows a symlink: the target is what numba will write into
    except OSError as e:
        return f"cannot create {p} ({e.strerror or e})"
    if not stat.S_ISDIR(st.st_mode):
        return f"{p} is not a directory"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"{p} is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{p} is writable by others (mode {stat.S_IMODE(st.st_mode):o}; numba's cache is pickle)"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable"
    return None


def _default_dir(env: dict) -> str | None:
    xdg = env.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "refnet", "numba")
    home = env.get("HOME") or (os.path.expanduser("~") if env is os.environ else "")
    if not home or home == "~" or not os.path.isabs(home):
        return None
    return os.path.join(home, ".cache", "refnet", "numba")


def choose_cache_dir(env: dict | None = None) -> CacheChoice:
    """Pick the cache folder as the module docstring says (no side effect but creating it)."""
    env = os.environ if env is None else env
    explicit = env.get(CACHE_ENV) or env.get("NUMBA_CACHE_DIR")
    first = explicit or _default_dir(env)
    why = check_private_dir(first) if first else "no home folder"
    if why is None:
        return CacheChoice(first, None)
    import tempfile  # only for a fallback (10 ms of imports otherwise paid by every first model load)

    uid = os.getuid() if hasattr(os, "getuid") else 0
    tmp = os.path.join(tempfile.gettempdir(), f"refnet-numba-{uid}")
    if check_private_dir(tmp) is None:
        return CacheChoice(tmp, f"refnet: numba cache: {why}; using the private folder {tmp}")
    try:
        fresh = tempfile.mkdtemp(prefix="refnet-numba-")  # 0700, owned by us, new
    except OSError:
        fresh = None
    if fresh is not None:
        return CacheChoice(fresh, f"refnet: numba cache: {why}; using the private temporary folder {fresh} "
                                  "(kernels compile again in every new folder)")
    return CacheChoice(None, f"refnet: numba cache: {why}, and no private temporary folder could be made; "
                             "kernels compile on every run")


KERNELS_DIR = os.path.dirname(os.path.abspath(__file__))


def package_stamp(folder: str = KERNELS_DIR) -> str:
    """One digest of the name, size and mtime of every ``.py`` file in ``folder`` ("" if unreadable)."""
    import hashlib

    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".py"))
    except OSError:
        return ""
    h = hashlib.sha256()
    for n in names:
        try:
            st = os.stat(os.path.join(folder, n))
        except OSError:
            continue
        h.update(f"{n}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


_STAMP: list[str] = []  # the package's digest, computed once per process


def kernels_stamp() -> str:
    """:func:`package_stamp` of the kernel package, once per process."""
    if not _STAMP:
        _STAMP.append(package_stamp())
    return _STAMP[0]


_NOTICE_SHOWN: list[bool] = []


def _notice() -> None:
    if not _NOTICE_SHOWN:
        _NOTICE_SHOWN.append(True)
        try:
            print(COMPILE_NOTICE, file=sys.stderr, flush=True)
        except (OSError, ValueError):  # stderr closed
            pass


def install_numba_hooks() -> None:
    """Make numba's cache robust (call after importing numba, before the first compile).

    - a cache entry that fails to load (corrupt pickle, truncated file, a rebuild error) is a
      miss: the kernel compiles and the entry is rewritten;
    - a corrupt index file reads as empty, so saving the new entry replaces it;
    - a miss for a refnet function prints the compile notice once per process;
    - a kernel file's source stamp also carries :func:`kernels_stamp` (see the module docstring)."""
    from numba.core import caching

    if getattr(caching.Cache.load_overload, "_refnet", False):
        return
    orig_load = caching.Cache.load_overload
    orig_index = caching.IndexDataCacheFile._load_index
    orig_stamp = caching._SourceFileBackedLocatorMixin.get_source_stamp

    def load_overload(self, sig, target_context):  # type: ignore[no-untyped-def]
        try:
            data = orig_load(self, sig, target_context)
        except Exception:  # noqa: BLE001 - any failure to read our own cache is a miss
            data = None
        if data is None and str(getattr(self._py_func, "__module__", "")).startswith("refnet."):
            _notice()
        return data

    def _load_index(self):  # type: ignore[no-untyped-def]
        try:
            return orig_index(self)
        except Exception:  # noqa: BLE001 - a garbled index is an empty one (rewritten on save)
            return {}

    def get_source_stamp(self):  # type: ignore[no-untyped-def]
        stamp = orig_stamp(self)
        py_file = getattr(self, "_py_file", None)
        if py_file and os.path.dirname(os.path.abspath(py_file)) == KERNELS_DIR:
            from refnet.kernels import _cache  # the module attribute, so a test can replace it

            return stamp, _cache.kernels_stamp()
        return stamp

    load_overload._refnet = True  # type: ignore[attr-defined]
    caching.Cache.load_overload = load_overload
    caching.IndexDataCacheFile._load_index = _load_index
    caching._SourceFileBackedLocatorMixin.get_source_stamp = get_source_stamp
