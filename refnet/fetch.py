"""Downloading zoo models: progress on stderr, checksum verification, atomic install.

:func:`download` streams one URL into a temporary file in the target folder, hashes it on
the way (sha256/sha1/md5, whichever the zoo entry knows), checks the length the server
announced, fsyncs, and only then ``os.replace``-s it into place, so a failed or interrupted
download never leaves a half-written model file behind. Only ``urllib`` is used.
:func:`fetch` does that for every file of a zoo entry. ``url_base`` (argument or the
``REFNET_URL_BASE`` environment variable) replaces each file's original URL by
``<url_base>/<relative path>``, for mirrors and for tests against a local server.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from refnet import zoo
from refnet.errors import RefnetError

__all__ = ["FetchError", "download", "fetch", "file_url", "verify", "hash_file", "DERIVERS", "URL_BASE_ENV"]

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
    """A one-line text bar on ``stream``, redrawn at most every ``interval`` seconds (and at the end)."""

    def __init__(self, label: str, total: int | None, stream: IO[str] | None, interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
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
def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, sha1: str | None = None,
             md5: str | None = None, size: int | None = None, timeout: float = 30.0,
             progress: IO[str] | None | str = "stderr", label: str | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically and verify it; return ``dest`` as a Path.

    The body is written to a temporary file beside ``dest``, hashed while streaming, checked
    against the announced Content-Length, ``size`` and the given checksums, fsync-ed and
    renamed over ``dest`` with ``os.replace``. On any failure the temporary file is removed
    and :class:`FetchError` says what went wrong (HTTP status, truncation, expected vs got
    digest). ``progress`` is the stream for the progress bar: ``"stderr"`` (default, looked
    up at call time), a text stream, or None for silence.
    """
    progress = _stream(progress)
    dest = Path(dest)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"cannot download {url!r}: only http(s) URLs are supported")
    expected = {"sha256": sha256, "sha1": sha1, "md5": md5}
    hashers = _hashers(expected)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"cannot create {dest.parent}: {e.strerror or e}") from e
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise FetchError(f"cannot write into {dest.parent}: {e.strerror or e}") from e
    tmp = Path(tmp_name)
    done = 0
    try:
        with os.fdopen(fd, "wb") as out:
            req = urllib.request.Request(url, headers={"User-Agent": "refnet-fetch/1 (+urllib)"})
            try:
                resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (scheme checked above)
            except urllib.error.HTTPError as e:
                raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, TimeoutError):
                    raise FetchError(f"{url}: timed out after {timeout:g} s") from None
                raise FetchError(f"{url}: {reason}") from None
            except TimeoutError:
                raise FetchError(f"{url}: timed out after {timeout:g} s") from None
            with resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                bar = _Progress(label or dest.name, total or size, progress)
                try:
                    while chunk := resp.read(CHUNK):
                        out.write(chunk)
                        for h in hashers.values():
                            h.update(chunk)
                        done += len(chunk)
                        bar.update(done)
                except http.client.IncompleteRead as e:
                    done += len(e.partial)
                    raise FetchError(f"{url}: truncated response: got {done} of {total} bytes") from None
                except TimeoutError:
                    raise FetchError(f"{url}: timed out after {timeout:g} s (read stalled at {done} bytes)") from None
                except (ConnectionError, http.client.HTTPException) as e:
                    raise FetchError(f"{url}: connection lost after {done} bytes ({e})") from None
                bar.update(done, final=True)
            if total is not None and done != total:
                raise FetchError(f"{url}: truncated response: got {done} of {total} bytes")
            _check(url, {a: h.hexdigest() for a, h in hashers.items()}, expected)
            if size is not None and done != size:
                raise FetchError(f"{url}: size mismatch: expected {size} bytes, got {done}")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as e:
        raise FetchError(f"writing {dest}: {e.strerror or e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
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


def fetch(name: str, dest: str | os.PathLike | None = None, *, url_base: str | None = None,
          force: bool = False, timeout: float = 30.0, progress: IO[str] | None | str = "stderr",
          roles: Sequence[str] = ("model", "weights", "labels", "extra")) -> list[Path]:
    """Download every file of zoo model ``name`` into ``dest`` (default: the cache); return their paths.

    A file already present in a search root (``dest``, ``$REFNET_MODELS``, the cache) is not
    downloaded again unless ``force``; one present in ``dest`` is verified first and replaced
    if its checksum is wrong. Derived files are made from their source file.
    """
    entry = zoo.get(name)
    progress = _stream(progress)
    root = Path(dest) if dest is not None else zoo.cache_dir()
    located = {s.file.path: s for s in zoo.find(entry.name, extra_roots=[root]).files}
    wanted = [f for f in entry.files if f.role in roles]
    # derived files need their source first
    wanted.sort(key=lambda f: f.derived_from is not None)
    out: list[Path] = []
    for f in wanted:
        target = root / f.path
        st = located.get(f.path)
        if not force and st is not None and st.path is not None:
            if st.root == root and f.checksums:
                try:
                    verify(st.path, f.checksums)
                except FetchError as e:
                    if progress is not None:
                        print(f"{e}; downloading again", file=progress)
                else:
                    out.append(st.path)
                    continue
            else:
                out.append(st.path)
                continue
        if f.derived_from is not None:
            src = _source_path(entry, f, root, url_base=url_base, timeout=timeout, progress=progress)
            derive = DERIVERS.get(f.derive or "")
            if derive is None:
                raise FetchError(f"{f.path}: unknown derivation {f.derive!r}")
            _write_atomic(target, derive(src.read_bytes()), f.checksums)
            if progress is not None:
                print(f"{f.path}: derived from {f.derived_from}", file=progress)
            out.append(target)
            continue
        url = file_url(f, url_base)
        if url is None:
            raise FetchError(f"{entry.name}: no download URL is known for {f.path}; place it under {root} by hand")
        download(url, target, sha256=f.sha256, sha1=f.sha1, md5=f.md5, size=f.size, timeout=timeout,
                 progress=progress, label=f.path)
        if progress is not None and not f.checksums:
            print(f"{f.path}: no published checksum, not verified", file=progress)
        out.append(target)
    return out


def _source_path(entry: zoo.ModelEntry, f: zoo.ModelFile, root: Path, **kw) -> Path:
    """The on-disk source of derived file ``f``, downloading it (from any entry that has it) if needed."""
    assert f.derived_from is not None
    for r in zoo.search_roots([root]):
        if (r / f.derived_from).is_file():
            return r / f.derived_from
    for m in zoo.entries():
        for g in m.files:
            if g.path == f.derived_from:
                url = file_url(g, kw.get("url_base"))
                if url is None:
                    break
                return download(url, root / g.path, sha256=g.sha256, sha1=g.sha1, md5=g.md5, size=g.size,
                                timeout=kw.get("timeout", 30.0), progress=kw.get("progress"), label=g.path)
    raise FetchError(f"{entry.name}: {f.path} is derived from {f.derived_from}, which is neither on disk nor "
                     "downloadable")
