"""Downloading zoo models: progress on stderr, checksum verification, atomic install.

:func:`download` streams one URL into a temporary file in the target folder, hashes it on
the way (sha256/sha1/md5, whichever the zoo entry knows), checks the length the server
announced, fsyncs, and only then ``os.replace``-s it into place, so a failed or interrupted
download never leaves a half-written model file behind; reads stop at the recorded size (or
Content-Length) plus a slack, and a watchdog ends a request after ``timeout`` seconds of wall
clock however slowly the server trickles. :func:`fetch` stages a whole model and renames it
into place only when every file verified, and removes ``.part`` files and staging folders
that killed fetches left. Only ``urllib`` is used.
:func:`fetch` does that for every file of a zoo entry. ``url_base`` (argument or the
``REFNET_URL_BASE`` environment variable) replaces each file's original URL by
``<url_base>/<relative path>``, for mirrors and for tests against a local server.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from refnet import zoo
from refnet.errors import RefnetError

__all__ = ["FetchError", "download", "fetch", "file_url", "verify", "hash_file", "DERIVERS", "URL_BASE_ENV",
           "clean_stale"]

URL_BASE_ENV = "REFNET_URL_BASE"
CHUNK = 1 << 16
HASHES = ("sha256", "sha1", "md5")


class FetchError(RefnetError):
    """A download failed: HTTP status, network error, truncation or checksum mismatch."""


# ---- progress -------------------------------------------------------------------------------------
def _stream(progress: IO[str] | None | str) -> IO[str] | None:
    if isinstance(progress, str):
        if progress != "stderr":
            raise ValueError(f"progress must be a text stream, None or 'stderr', got {progress!r}")
        return sys.stderr
    return progress


class _Progress:
    """On a terminal (``tty``, default: ``stream.isatty()``), a one-line text bar redrawn at most
    every ``interval`` seconds (and at the end); elsewhere (logs, pipes) a few plain lines: the
    start, each quarter when the total is known, and the end."""

    def __init__(self, label: str, total: int | None, stream: IO[str] | None, interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic, tty: bool | None = None) -> None:
        if tty is None:
            try:
                tty = bool(stream is not None and stream.isatty())
            except (AttributeError, ValueError):
                tty = False
        self.tty = tty
        self.quarter = -1
        self.label = label
        self.total = total
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.t0 = clock()
        self.last = self.t0 - interval  # the first update draws
        self.drawn = 0

    def update(self, done: int, final: bool = False) -> None:
        if self.stream is None:
            return
        if not self.tty:
            self._line(done, final)
            return
        now = self.clock()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-6)
        if self.total:
            frac = min(done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            text = f"[{bar:<30s}] {frac * 100:5.1f}% {_mb(done)}/{_mb(self.total)}"
        else:
            text = f"{_mb(done)}"
        self.stream.write(f"\r{self.label[:40]:40s} {text} {_mb(rate)}/s")
        if final:
            self.stream.write("\n")
        self.stream.flush()
        self.drawn += 1


    def _line(self, done: int, final: bool) -> None:
        q = min(int(4 * done / self.total), 4) if self.total else 0
        if final:
            secs = max(self.clock() - self.t0, 1e-6)
            pct = f"{100 * done / self.total:.1f}% " if self.total else ""
            text = f"{self.label}: {pct}{_mb(done)} in {secs:.1f} s\n"
        elif q > self.quarter and q < 4:
            self.quarter = q
            text = (f"{self.label}: {25 * q}% of {_mb(self.total)}\n" if self.total
                    else f"{self.label}: downloading (size unknown)\n")
        else:
            return
        self.stream.write(text)
        self.stream.flush()
        self.drawn += 1


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


# ---- hashing ----------------------------------------------------------------------------------------
def _hashers(expected: Mapping[str, str | None]) -> dict[str, Any]:
    out = {}
    for algo, want in expected.items():
        if want is None:
            continue
        if algo not in HASHES:
            raise ValueError(f"unsupported checksum algorithm {algo!r}; use one of {HASHES}")
        out[algo] = hashlib.new(algo)
    return out


def hash_file(path: str | os.PathLike, algos: Sequence[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file, ``{algorithm: digest}``."""
    hs = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for h in hs.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hs.items()}


def _check(what: str, got: Mapping[str, str], expected: Mapping[str, str | None]) -> None:
    for algo, want in expected.items():
        if want is not None and got[algo] != want.lower():
            raise FetchError(f"checksum mismatch for {what}: {algo} expected {want.lower()}, got {got[algo]}")


def verify(path: str | os.PathLike, expected: Mapping[str, str | None]) -> None:
    """Raise FetchError when the file's digests differ from the ``expected`` ones (None = not checked)."""
    algos = [a for a, v in expected.items() if v is not None]
    _check(str(path), hash_file(path, algos) if algos else {}, expected)


# ---- one download ------------------------------------------------------------------------------------
SLACK = 1 << 20  # bytes a server may send beyond the recorded size / Content-Length before we stop reading
PART_SUFFIX = ".part"
STAGING_PREFIX = ".refnet-staging-"


class _Watchdog:
    """Wall-clock limit of one request: after ``seconds`` it shuts the connection's socket down,
    which ends any blocked connect/header/body read (a server trickling one byte every few
    seconds cannot extend the request: the socket timeout alone restarts with every byte)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.sock = None
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True

    def _fire(self) -> None:
        with self.lock:
            self.expired = True
            if self.sock is not None:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def attach(self, sock) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            self.sock = sock
            if self.expired:
                self._fire()

    def __enter__(self) -> _Watchdog:
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()


def _opener(dog: _Watchdog) -> urllib.request.OpenerDirector:
    """A urllib opener whose connections hand their socket to ``dog``."""

    def conn_class(base):  # type: ignore[no-untyped-def]
        class Conn(base):  # type: ignore[misc, valid-type]
            def connect(self) -> None:
                super().connect()
                dog.attach(self.sock)
        return Conn

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(conn_class(http.client.HTTPConnection), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(conn_class(http.client.HTTPSConnection), req, context=self._context)

    return urllib.request.build_opener(Http, Https)


def _read_limit(size: int | None, length: int | None) -> int:
    """The most bytes read from a body: the recorded size, else the announced Content-Length,
    plus :data:`SLACK`; with neither, the memory budget (the download budget; 4 GiB if unlimited)."""
    known = size if size is not None else length
    if known is not None:
        return known + SLACK
    from refnet.runtime.budget import memory_budget

    return memory_budget() or (4 << 30)


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, sha1: str | None = None,
             md5: str | None = None, size: int | None = None, timeout: float = 30.0,
             progress: IO[str] | None | str = "stderr", label: str | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically and verify it; return ``dest`` as a Path.

    The body is written to a temporary file beside ``dest`` (``.<name>.<pid>.<random>.part``,
    cleaned by the next :func:`fetch` if this process is killed), hashed while streaming,
    checked against the announced Content-Length, ``size`` and the given checksums, fsync-ed,
    made mode 0644 (less the umask) and renamed over ``dest`` with ``os.replace``. At most
    ``size`` (else Content-Length) + :data:`SLACK` bytes are read; ``timeout`` is a wall-clock
    limit on the whole request. On any failure the temporary file is removed and
    :class:`FetchError` says what went wrong (HTTP status, truncation, expected vs got digest).
    ``progress`` is the stream for the progress display: ``"stderr"`` (default, looked up at
    call time), a text stream, or None for silence.
    """
    progress = _stream(progress)
    dest = Path(dest)
    _check_request(url, timeout)
    expected = {"sha256": sha256, "sha1": sha1, "md5": md5}
    hashers = _hashers(expected)
    fd, tmp = _part_file(dest)
    try:
        with os.fdopen(fd, "wb") as out, _Watchdog(timeout) as dog:
            with _open(url, dog, timeout) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.strip().isdigit() else None
                bar = _Progress(label or dest.name, total or size, progress)
                done = _stream_body(resp, out, hashers, url, _read_limit(size, total), size, total, dog, bar)
            if total is not None and done != total:
                raise FetchError(f"{url}: truncated response: got {done} of {total} bytes")
            _check(url, {a: h.hexdigest() for a, h in hashers.items()}, expected)
            if size is not None and done != size:
                raise FetchError(f"{url}: size mismatch: expected {size} bytes, got {done}")
            out.flush()
            os.fchmod(out.fileno(), 0o644 & ~_umask())
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as e:
        raise FetchError(f"writing {dest}: {e.strerror or e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _check_request(url: str, timeout: float) -> None:
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise FetchError(f"cannot download {url!r}: only http(s) URLs are supported")
    if not (isinstance(timeout, (int, float)) and 0 < timeout < 1e6):
        raise FetchError(f"timeout must be a number of seconds between 0 and 1e6, got {timeout!r}")


def _part_file(dest: Path) -> tuple[int, Path]:
    """The temporary file beside ``dest`` (``.<name>.<pid>.<random>.part``): its fd and path."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"cannot create {dest.parent}: {e.strerror or e}") from e
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=PART_SUFFIX, dir=dest.parent)
    except OSError as e:
        raise FetchError(f"cannot write into {dest.parent}: {e.strerror or e}") from e
    return fd, Path(tmp_name)


def _open(url: str, dog: _Watchdog, timeout: float) -> Any:
    """The HTTP response of ``url``, or FetchError naming the status, the reason or the timeout."""
    req = urllib.request.Request(url, headers={"User-Agent": "refnet-fetch/1 (+urllib)"})
    late = f"{url}: timed out after {timeout:g} s"
    try:
        return _opener(dog).open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError) or dog.expired:
            raise FetchError(late) from None
        raise FetchError(f"{url}: {reason}") from None
    except (TimeoutError, OSError, http.client.HTTPException, ValueError) as e:
        if dog.expired or isinstance(e, TimeoutError):
            raise FetchError(late) from None
        raise FetchError(f"{url}: malformed or broken HTTP response ({type(e).__name__}: {e})") from None


def _stream_body(resp: Any, out: IO[bytes], hashers: dict, url: str, limit: int, size: int | None,
                 total: int | None, dog: _Watchdog, bar: _Progress) -> int:
    """Copy the body to ``out``, hashing as it goes, at most ``limit`` bytes; return the byte count."""
    late = f"{url}: timed out after {dog.seconds:g} s"
    done = 0
    try:
        while chunk := resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK):
            done += len(chunk)
            if done > limit:
                raise FetchError(f"{url}: the server sent more than {limit:,} bytes (expected "
                                 f"{size if size is not None else total} bytes); stopped")
            out.write(chunk)
            for h in hashers.values():
                h.update(chunk)
            bar.update(done)
    except http.client.IncompleteRead as e:
        done += len(e.partial)
        raise FetchError(f"{url}: truncated response: got {done} of {total} bytes") from None
    except TimeoutError:
        raise FetchError(f"{late} (read stalled at {done} bytes)") from None
    except (ConnectionError, http.client.HTTPException, ValueError) as e:
        if dog.expired:
            raise FetchError(f"{late} (at {done} bytes)") from None
        raise FetchError(f"{url}: connection lost after {done} bytes ({e})") from None
    if dog.expired:
        raise FetchError(f"{late} (at {done} bytes)")
    bar.update(done, final=True)
    return done


def _umask() -> int:
    """The process umask, read without changing it where Linux says it (os.umask sets it: racy in threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover (platforms without directory fds)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# ---- derived files -------------------------------------------------------------------------------------
def _torch_cuda_long_to_long(data: bytes) -> bytes:
    """Rename serialized ``torch.CudaLongTensor`` class names to ``torch.LongTensor``, fixing
    the int32 length prefix of each t7 string (what cv2.dnn needs to read a GPU-saved model)."""
    old = struct.pack("<i", 20) + b"torch.CudaLongTensor"
    if old not in data:
        raise FetchError("source file has no torch.CudaLongTensor class name to rewrite")
    return data.replace(old, struct.pack("<i", 16) + b"torch.LongTensor")


DERIVERS: dict[str, Callable[[bytes], bytes]] = {"torch_cuda_long_to_long": _torch_cuda_long_to_long}


def _tar_member(member: str) -> Callable[[bytes], bytes]:
    """A deriver reading one regular file out of a (gzipped) tar archive, nothing written but it."""
    def derive(data: bytes) -> bytes:
        import io
        import tarfile

        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                f = tar.extractfile(tar.getmember(member))
                if f is None:
                    raise FetchError(f"{member} is not a regular file in the archive")
                return f.read()
        except (tarfile.TarError, KeyError) as e:
            raise FetchError(f"cannot read {member} from the archive: {e}") from None
    return derive


# the two-stage detectors' weights come inside their authors' archives (see refnet.zoo)
DERIVERS.update({f"tar:{m}": _tar_member(m) for m in ("faster_rcnn_models/VGG16_faster_rcnn_final.caffemodel",
                                                      "rfcn_models/resnet50_rfcn_final.caffemodel")})


def _write_atomic(dest: Path, data: bytes, expected: Mapping[str, str | None]) -> None:
    got = {a: hashlib.new(a, data).hexdigest() for a, v in expected.items() if v is not None}
    _check(str(dest), got, expected)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=PART_SUFFIX, dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o644 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp_name, dest)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


# ---- a whole zoo entry ---------------------------------------------------------------------------------
def file_url(f: zoo.ModelFile, url_base: str | None = None) -> str | None:
    """The URL ``f`` is downloaded from: ``<url_base>/<f.path>`` when a base is given (argument or
    ``$REFNET_URL_BASE``), else the original URL (None when it has none)."""
    base = url_base if url_base is not None else os.environ.get(URL_BASE_ENV) or None
    if base:
        return base.rstrip("/") + "/" + urllib.parse.quote(f.path)
    return f.url


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _stale_pid(name: str, prefix: str, sep: str = ".") -> bool:
    """Whether a leftover named ``<prefix><pid><sep>...`` belongs to a process that is gone."""
    rest = name[len(prefix):] if name.startswith(prefix) else ""
    head = rest.split(sep, 1)[0]
    return head.isdigit() and int(head) != os.getpid() and not _pid_alive(int(head))


def clean_stale(root: Path, folders: Sequence[Path] = ()) -> list[Path]:
    """Remove what killed fetches left in ``root``: staging folders and ``.part`` files of
    processes that no longer run (looked for in ``root`` and ``folders``); return them."""
    removed: list[Path] = []
    for d in [root, *folders]:
        try:
            names = list(os.scandir(d))
        except OSError:
            continue
        for e in names:
            if d == root and e.name.startswith(STAGING_PREFIX) and e.is_dir(follow_symlinks=False):
                if _stale_pid(e.name, STAGING_PREFIX, "-"):
                    shutil.rmtree(e.path, ignore_errors=True)
                    removed.append(Path(e.path))
            elif e.name.startswith(".") and e.name.endswith(PART_SUFFIX) and e.is_file(follow_symlinks=False):
                parts = e.name[:-len(PART_SUFFIX)].split(".")  # "", name..., pid, random
                if len(parts) >= 4 and parts[-2].isdigit() and _stale_pid(parts[-2], ""):
                    try:
                        os.unlink(e.path)
                        removed.append(Path(e.path))
                    except OSError:
                        pass
    return removed


def _present(st: Any, f: zoo.ModelFile, progress: IO[str] | None) -> bool:
    """Whether a file found on disk is the right one: its checksums (else its recorded size) match."""
    if f.checksums:
        try:
            verify(st.path, f.checksums)
        except FetchError as e:
            if progress is not None:
                print(f"{e}; downloading again", file=progress)
            return False
        return True
    if f.size is not None and st.path.stat().st_size != f.size:
        if progress is not None:
            print(f"{st.path}: {st.path.stat().st_size} bytes, expected {f.size}; downloading again", file=progress)
        return False
    return True


def fetch(name: str, dest: str | os.PathLike | None = None, *, url_base: str | None = None,
          force: bool = False, timeout: float = 30.0, progress: IO[str] | None | str = "stderr",
          roles: Sequence[str] = ("model", "weights", "labels", "extra")) -> list[Path]:
    """Download every file of zoo model ``name`` into ``dest`` (default: the cache); return their paths.

    A file already present in a search root (``dest``, ``$REFNET_MODELS``, the cache) is not
    downloaded again unless ``force``, once its checksum (else its recorded size) is verified;
    a wrong one is downloaded again into ``dest``. Derived files are made from their source file.
    The model installs all-or-nothing: every file goes into a staging folder in ``dest``
    (``.refnet-staging-<pid>-...``) and is renamed into place only when all of them arrived and
    verified; a failure leaves ``dest`` as it was. Leftovers of killed fetches are removed first.
    """
    entry = zoo.get(name)
    progress = _stream(progress)
    root = Path(dest) if dest is not None else zoo.cache_dir()
    wanted = [f for f in entry.files if f.role in roles]
    if root.is_dir():
        clean_stale(root, sorted({(root / f.path).parent for f in wanted}))
    located = {s.file.path: s for s in zoo.find(entry.name, extra_roots=[root]).files}
    # derived files need their source first
    wanted.sort(key=lambda f: f.derived_from is not None)
    out: list[Path] = []
    staged: list[tuple[Path, Path]] = []  # (staging path, final path)
    staging: list[Path] = []

    def stage_dir() -> Path:
        if not staging:
            try:
                root.mkdir(parents=True, exist_ok=True)
                staging.append(Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=root)))
            except OSError as e:
                raise FetchError(f"cannot create {root}: {e.strerror or e}") from e
        return staging[0]

    try:
        for f in wanted:
            target = root / f.path
            st = located.get(f.path)
            if not force and st is not None and st.path is not None and _present(st, f, progress):
                out.append(st.path)
                continue
            tmp = stage_dir() / f.path
            if f.derived_from is not None:
                src = _source_path(entry, f, root, stage_dir(), staged, url_base=url_base, timeout=timeout,
                                   progress=progress)
                derive = DERIVERS.get(f.derive or "")
                if derive is None:
                    raise FetchError(f"{f.path}: unknown derivation {f.derive!r}")
                _write_atomic(tmp, derive(src.read_bytes()), f.checksums)
                if progress is not None:
                    print(f"{f.path}: derived from {f.derived_from}", file=progress)
            else:
                url = file_url(f, url_base)
                if url is None:
                    raise FetchError(f"{entry.name}: no download URL is known for {f.path}; "
                                     f"place it under {root} by hand")
                download(url, tmp, sha256=f.sha256, sha1=f.sha1, md5=f.md5, size=f.size, timeout=timeout,
                         progress=progress, label=f.path)
                if progress is not None and not f.checksums:
                    print(f"{f.path}: no published checksum, not verified", file=progress)
            staged.append((tmp, target))
            out.append(target)
        _install(staged)
    finally:
        for d in staging:
            shutil.rmtree(d, ignore_errors=True)
    return out


def _install(staged: Sequence[tuple[Path, Path]]) -> None:
    """Rename every staged file into place (same file system: each rename is atomic)."""
    try:
        for tmp, target in staged:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        for d in {t.parent for _, t in staged}:
            _fsync_dir(d)
    except OSError as e:
        raise FetchError(f"installing {target}: {e.strerror or e}") from e


def _source_path(entry: zoo.ModelEntry, f: zoo.ModelFile, root: Path, stage: Path,
                 staged: list[tuple[Path, Path]], **kw) -> Path:
    """The on-disk source of derived file ``f``: found in a search root, already staged, or
    downloaded (from any entry that has it) into the staging folder and installed with the model."""
    assert f.derived_from is not None
    for r in zoo.search_roots([root]):
        if (r / f.derived_from).is_file():
            return r / f.derived_from
    for tmp, target in staged:
        if target == root / f.derived_from:
            return tmp
    for m in zoo.entries():
        for g in m.files:
            if g.path == f.derived_from:
                url = file_url(g, kw.get("url_base"))
                if url is None:
                    break
                tmp = download(url, stage / g.path, sha256=g.sha256, sha1=g.sha1, md5=g.md5, size=g.size,
                               timeout=kw.get("timeout", 30.0), progress=kw.get("progress"), label=g.path)
                staged.append((tmp, root / g.path))
                return tmp
    raise FetchError(f"{entry.name}: {f.path} is derived from {f.derived_from}, which is neither on disk nor "
                     "downloadable")
