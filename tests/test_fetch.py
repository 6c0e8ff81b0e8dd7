"""Downloads against a local HTTP server on 127.0.0.1 (started here; no other host is contacted).

Checked: success with sha256/sha1/md5, checksum mismatch (expected and got named, no file
left behind, an existing file untouched), HTTP 404, truncated body, stalled server
(timeout), unsupported schemes, the URL override (argument and REFNET_URL_BASE), whole zoo
entries (skip present files, replace corrupt ones, derive ENet's CPU file, whose sha256 the
manifest gives), and `refnet models fetch` exit codes.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from refnet import fetch, zoo
from refnet.cli import main
from refnet.fetch import FetchError

BODY = bytes(range(256)) * 1000  # 256 kB


class _Server:
    """Serves ``files`` (path -> bytes); ``/truncated/*`` announces more than it sends, ``/slow/*`` stalls."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.stall = 2.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append(self.path)
                if self.path.startswith("/slow/"):
                    time.sleep(outer.stall)
                path = self.path.split("/", 2)[2] if self.path.startswith(("/slow/", "/truncated/")) else self.path
                data = outer.files.get(path.lstrip("/"))
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if self.path.startswith("/truncated/"):
                    self.send_header("Content-Length", str(len(data) + 1000))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:  # a client that timed out hung up
                pass

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def _server_once():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def server(_server_once):
    """The module's server with fresh contents for each test."""
    s = _server_once
    s.files.clear()
    s.requests.clear()
    s.stall = 2.0
    s.files["data/blob.bin"] = BODY
    return s


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No REFNET_MODELS, REFNET_URL_BASE unset, the cache in a temporary folder."""
    monkeypatch.setenv("REFNET_MODELS", "")  # empty: not even the checkout's sibling shared/models
    monkeypatch.delenv(fetch.URL_BASE_ENV, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("REFNET_CACHE", str(cache))
    return cache


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*") if p.name.endswith(".part"))


# ---- download() ---------------------------------------------------------------------------------------
def test_download_success_verifies_all_checksums(server, tmp_path):
    dest = tmp_path / "sub" / "blob.bin"
    bar = io.StringIO()
    got = fetch.download(f"{server.base}/data/blob.bin", dest, sha256=hashlib.sha256(BODY).hexdigest(),
                         sha1=hashlib.sha1(BODY).hexdigest(), md5=hashlib.md5(BODY).hexdigest(),
                         size=len(BODY), progress=bar)
    assert got == dest and dest.read_bytes() == BODY
    assert _leftovers(tmp_path) == []
    text = bar.getvalue()
    assert "100.0%" in text and text.endswith("\n") and "blob.bin" in text
    # without checksums it still downloads (nothing to verify)
    fetch.download(f"{server.base}/data/blob.bin", tmp_path / "b2", progress=None)
    assert (tmp_path / "b2").read_bytes() == BODY


def test_progress_is_throttled():
    now = [100.0]
    out = io.StringIO()
    bar = fetch._Progress("f.bin", 1000, out, interval=0.25, clock=lambda: now[0], tty=True)
    for i in range(1, 101):  # 100 updates, 10 ms apart: one draw per 0.25 s, plus the final one
        now[0] += 0.01
        bar.update(i * 10)
    bar.update(1000, final=True)
    assert bar.drawn == 5 and out.getvalue().count("\r") == 5
    assert out.getvalue().endswith("\n") and "100.0%" in out.getvalue().splitlines()[-1]
    # not a terminal (a log file, a pipe): a few plain lines, no carriage returns
    now[0] = 100.0
    log = io.StringIO()
    plain = fetch._Progress("f.bin", 1000, log, interval=0.25, clock=lambda: now[0])
    for i in range(1, 1001):
        now[0] += 0.001
        plain.update(i)
    plain.update(1000, final=True)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 5
    assert lines[1] == "f.bin: 25% of 1.0 kB" and lines[-1] == "f.bin: 100.0% 1.0 kB in 1.0 s"
    silent = fetch._Progress("f.bin", None, None)
    silent.update(5, final=True)
    assert silent.drawn == 0


@pytest.mark.parametrize("algo", ["sha256", "sha1", "md5"])
def test_checksum_mismatch_names_expected_and_got_and_leaves_nothing(server, tmp_path, algo):
    dest = tmp_path / "blob.bin"
    wrong = hashlib.new(algo, b"something else").hexdigest()
    with pytest.raises(FetchError) as ei:
        fetch.download(f"{server.base}/data/blob.bin", dest, progress=None, **{algo: wrong})
    msg = str(ei.value)
    assert f"{algo} expected {wrong}" in msg and f"got {hashlib.new(algo, BODY).hexdigest()}" in msg
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_failed_download_keeps_the_existing_file(server, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"old and good")
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch.download(f"{server.base}/data/blob.bin", dest, sha256="0" * 64, progress=None)
    assert dest.read_bytes() == b"old and good" and _leftovers(tmp_path) == []


def test_http_404(server, tmp_path):
    with pytest.raises(FetchError, match=r"HTTP 404 Not Found"):
        fetch.download(f"{server.base}/nope.bin", tmp_path / "nope.bin", progress=None)
    assert list(tmp_path.iterdir()) == []


def test_truncated_response(server, tmp_path):
    with pytest.raises(FetchError, match=rf"truncated response: got {len(BODY) // 2} of {len(BODY) + 1000} bytes"):
        fetch.download(f"{server.base}/truncated/data/blob.bin", tmp_path / "t.bin", progress=None)
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch(server, tmp_path):
    with pytest.raises(FetchError, match=f"expected {len(BODY) + 1} bytes, got {len(BODY)}"):
        fetch.download(f"{server.base}/data/blob.bin", tmp_path / "s.bin", size=len(BODY) + 1, progress=None)
    assert list(tmp_path.iterdir()) == []


def test_timeout(server, tmp_path):
    server.stall = 1.5
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="timed out after 0.3 s"):
        fetch.download(f"{server.base}/slow/data/blob.bin", tmp_path / "slow.bin", timeout=0.3, progress=None)
    assert time.monotonic() - t0 < 1.4
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["file:///etc/hostname", "ftp://127.0.0.1/x", "/just/a/path"])
def test_only_http_urls(tmp_path, url):
    with pytest.raises(FetchError, match="only http"):
        fetch.download(url, tmp_path / "x", progress=None)


def test_unwritable_destination(server, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(FetchError, match="cannot create"):
        fetch.download(f"{server.base}/data/blob.bin", blocker / "sub" / "x.bin", progress=None)


# ---- zoo entries ------------------------------------------------------------------------------------------
@pytest.fixture
def lenet_server(server, models):
    for rel in ("lenet_mnist_caffe/lenet.prototxt", "lenet_mnist_caffe/lenet_iter_10000.caffemodel"):
        server.files[rel] = (models / rel).read_bytes()
    return server


def test_file_url_override(monkeypatch):
    f = zoo.get("lenet-mnist").files[0]
    assert fetch.file_url(f) == f.url
    assert fetch.file_url(f, "http://mirror/m/") == "http://mirror/m/lenet_mnist_caffe/lenet.prototxt"
    monkeypatch.setenv(fetch.URL_BASE_ENV, "http://env-mirror")
    assert fetch.file_url(f) == "http://env-mirror/lenet_mnist_caffe/lenet.prototxt"
    assert fetch.file_url(f, "http://arg") == "http://arg/lenet_mnist_caffe/lenet.prototxt"  # argument wins


def test_fetch_entry_into_cache_then_found(lenet_server, env):
    paths = fetch.fetch("lenet", url_base=lenet_server.base, progress=None)
    assert paths == [env / "lenet_mnist_caffe/lenet.prototxt", env / "lenet_mnist_caffe/lenet_iter_10000.caffemodel"]
    loc = zoo.find("lenet-mnist")
    assert loc.status == "found" and loc.roots == (env,)
    n = len(lenet_server.requests)
    assert n == 2
    # present and verified: no new request
    assert fetch.fetch("lenet-mnist", url_base=lenet_server.base, progress=None) == paths
    assert len(lenet_server.requests) == n
    # a corrupt copy in the target root is replaced
    paths[1].write_bytes(b"garbage")
    log = io.StringIO()
    fetch.fetch("lenet-mnist", url_base=lenet_server.base, progress=log)
    assert "checksum mismatch" in log.getvalue() and len(lenet_server.requests) == n + 1
    assert hashlib.sha256(paths[1].read_bytes()).hexdigest() == zoo.get("lenet-mnist").files[1].sha256
    # force downloads again
    fetch.fetch("lenet-mnist", url_base=lenet_server.base, progress=None, force=True)
    assert len(lenet_server.requests) == n + 3


def test_fetch_uses_env_url_base_and_dest(lenet_server, env, tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.URL_BASE_ENV, lenet_server.base + "/")
    dest = tmp_path / "elsewhere"
    paths = fetch.fetch("lenet-mnist", dest, progress=None)
    assert all(p.is_file() and dest in p.parents for p in paths)
    assert zoo.find("lenet-mnist", extra_roots=[dest]).found and not zoo.find("lenet-mnist").found


def test_fetch_entry_checksum_mismatch(lenet_server, env):
    lenet_server.files["lenet_mnist_caffe/lenet_iter_10000.caffemodel"] = b"tampered"
    with pytest.raises(FetchError) as ei:
        fetch.fetch("lenet-mnist", url_base=lenet_server.base, progress=None)
    want = zoo.get("lenet-mnist").files[1].sha256
    assert f"sha256 expected {want}, got {hashlib.sha256(b'tampered').hexdigest()}" in str(ei.value)
    assert not (env / "lenet_mnist_caffe/lenet_iter_10000.caffemodel").exists() and _leftovers(env) == []


def test_fetch_derives_enet_cpu_file(server, env, models):
    """model-best.cpu.net is made from model-best.net; the manifest's sha256 is the oracle."""
    for rel in ("enet_cityscapes_torch/model-best.net", "enet_cityscapes_torch/enet-classes.txt"):
        server.files[rel] = (models / rel).read_bytes()
    paths = fetch.fetch("enet-cityscapes-cpu", url_base=server.base, progress=None)
    cpu = env / "enet_cityscapes_torch/model-best.cpu.net"
    assert cpu in paths and (env / "enet_cityscapes_torch/model-best.net").is_file()
    assert hashlib.sha256(cpu.read_bytes()).hexdigest() == (
        "94b43fd16d5e0e2167f71ba0be1394a6f2b984178fea4aa8fb4e7252b9fac4ff")
    assert cpu.read_bytes() == (models / "enet_cityscapes_torch/model-best.cpu.net").read_bytes()
    with pytest.raises(FetchError, match="no torch.CudaLongTensor"):
        fetch.DERIVERS["torch_cuda_long_to_long"](b"\x10\x00\x00\x00torch.LongTensor")


def test_fetch_without_any_url(env, monkeypatch):
    m = zoo.ModelEntry("no-url-test", "caffe", "classify", (zoo.ModelFile("nourl/x.prototxt", "model"),),
                       license="-", description="-")
    monkeypatch.setitem(zoo.REGISTRY, m.name, m)
    monkeypatch.setitem(zoo._ALIASES, m.name, m.name)
    with pytest.raises(FetchError, match="no download URL is known for nourl/x.prototxt"):
        fetch.fetch("no-url-test", progress=None)


# ---- CLI ---------------------------------------------------------------------------------------------------
def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refnet: error: "), err
    return lines[0]


def test_cli_fetch_success(lenet_server, env, capsys):
    assert main(["models", "fetch", "lenet-mnist", "--url-base", lenet_server.base]) == 0
    cap = capsys.readouterr()
    assert cap.out.split() == [str(env / "lenet_mnist_caffe/lenet.prototxt"),
                               str(env / "lenet_mnist_caffe/lenet_iter_10000.caffemodel")]
    assert "100.0%" in cap.err  # the progress bar goes to stderr
    assert main(["models", "path", "lenet-mnist"]) == 0
    assert capsys.readouterr().out.split() == cap.out.split()


def test_cli_fetch_errors(lenet_server, env, tmp_path, capsys):
    assert main(["models", "fetch", "lenet-mnsit"]) == 2
    assert "did you mean lenet-mnist" in _one_error_line(capsys.readouterr().err)
    assert main(["models", "fetch", "lenet-mnist", "--quiet", "--url-base", lenet_server.base + "/gone"]) == 2
    assert "HTTP 404" in _one_error_line(capsys.readouterr().err)
    lenet_server.files["lenet_mnist_caffe/lenet.prototxt"] = b"tampered"
    assert main(["models", "fetch", "lenet-mnist", "--quiet", "--url-base", lenet_server.base]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "checksum mismatch" in line and "expected c0455d92" in line
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["models", "fetch", "lenet-mnist", "--quiet", "--dest", str(blocker / "d"),
                 "--url-base", lenet_server.base]) == 2
    assert "cannot create" in _one_error_line(capsys.readouterr().err)
    assert main(["models", "fetch", "lenet-mnist", "--quiet", "--timeout", "0.3",
                 "--url-base", lenet_server.base + "/truncated"]) == 2
    assert "truncated response" in _one_error_line(capsys.readouterr().err)
    with pytest.raises(FetchError):
        main(["--debug", "models", "fetch", "lenet-mnist", "--quiet", "--url-base", lenet_server.base + "/gone"])
    assert not (env / "lenet_mnist_caffe").exists() or _leftovers(env) == []
