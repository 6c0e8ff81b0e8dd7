"""Issue 16 case 6: hostile or broken HTTP servers (all on 127.0.0.1, bounded loops).

Endless body, one byte every 0.4 s, a malformed status line, a model whose second file fails,
leftovers of a killed fetch, file modes, and files already present with a wrong checksum.
The oracle is the bytes served and their sha256 computed here.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from refnet import fetch, zoo
from refnet.cli import main
from refnet.fetch import FetchError

A = b"layer { name: 'a' }\n" * 80  # 1,600 bytes
B = bytes(range(256)) * 64


class _Server:
    def __init__(self) -> None:
        self.files = {"m/a.prototxt": A, "m/b.caffemodel": B}
        self.stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                kind, _, rel = self.path.lstrip("/").partition("/")
                if kind == "raw":  # a status line no HTTP client accepts
                    self.wfile.write(b"HTTP/1.1 OK-ish\r\n\r\n")
                    return
                data = outer.files.get(rel)
                if data is None or (kind == "fail2" and rel.endswith(".caffemodel")):
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                if kind == "endless":  # no Content-Length, never ends (bounded by the test's stop)
                    self.end_headers()
                    for _ in range(100000):
                        if outer.stop.is_set():
                            return
                        self.wfile.write(b"x" * 65536)
                    return
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if kind == "trickle":
                    for byte in data[:200]:
                        if outer.stop.is_set():
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.4)
                    return
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def entry(monkeypatch, tmp_path):
    """A two-file zoo entry with recorded sha256 and sizes; the cache in tmp_path."""
    files = (zoo.ModelFile("m/a.prototxt", "model", "http://unused/a", hashlib.sha256(A).hexdigest(), size=len(A)),
             zoo.ModelFile("m/b.caffemodel", "weights", "http://unused/b", hashlib.sha256(B).hexdigest(),
                           size=len(B)))
    m = zoo.ModelEntry("attack-test", "caffe", "classify", files, license="-", description="-")
    monkeypatch.setitem(zoo.REGISTRY, m.name, m)
    monkeypatch.setitem(zoo._ALIASES, m.name, m.name)
    monkeypatch.delenv("REFNET_MODELS", raising=False)
    monkeypatch.delenv(fetch.URL_BASE_ENV, raising=False)
    monkeypatch.setenv("REFNET_CACHE", str(tmp_path / "cache"))
    return m


def _all_files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")) if d.exists() else []


def test_endless_body_stops_at_recorded_size_plus_slack(server, entry, tmp_path):
    dest = tmp_path / "cache"
    with pytest.raises(FetchError, match=r"sent more than 1,050,176 bytes \(expected 1600 bytes\)"):
        fetch.fetch("attack-test", url_base=server.base + "/endless", progress=None, timeout=20)
    assert _all_files(dest) == []  # nothing partial: no file, no folder, no .part, no staging


def test_endless_body_without_any_known_size_stops_at_the_download_budget(server, tmp_path, monkeypatch):
    monkeypatch.setenv("REFNET_MEMORY_BUDGET", "3MiB")
    with pytest.raises(FetchError, match=r"sent more than 3,145,728 bytes"):
        fetch.download(server.base + "/endless/m/a.prototxt", tmp_path / "x", progress=None, timeout=20)
    assert list(tmp_path.iterdir()) == []


def test_trickling_server_cannot_extend_the_timeout(server, entry, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(FetchError, match=r"timed out after 1.5 s"):
        fetch.fetch("attack-test", url_base=server.base + "/trickle", progress=None, timeout=1.5)
    assert time.monotonic() - t0 < 4.0  # one byte every 0.4 s would take 80 s; the socket timeout alone never fires
    assert _all_files(tmp_path / "cache") == []


def test_malformed_status_line_is_a_fetch_error(server, tmp_path):
    with pytest.raises(FetchError, match="malformed or broken HTTP response"):
        fetch.download(server.base + "/raw/x", tmp_path / "x", progress=None, timeout=5)


def test_model_installs_all_or_nothing(server, entry, tmp_path):
    dest = tmp_path / "cache"
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch.fetch("attack-test", url_base=server.base + "/fail2", progress=None)
    assert _all_files(dest) == []  # the first file arrived and verified, but was not installed alone
    paths = fetch.fetch("attack-test", url_base=server.base + "/ok", progress=None)
    assert [p.read_bytes() for p in paths] == [A, B]
    assert _all_files(dest) == ["m", "m/a.prototxt", "m/b.caffemodel"]
    old = os.umask(0o022)
    os.umask(old)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644 & ~old


def test_leftovers_of_a_killed_fetch_are_cleaned(server, entry, tmp_path):
    dest = tmp_path / "cache"
    (dest / "m").mkdir(parents=True)
    dead = 2**22 + 12345  # above pid_max's default: never a live process
    part = dest / "m" / f".a.prototxt.{dead}.k2j3.part"
    part.write_bytes(b"half")
    staging = dest / f".refnet-staging-{dead}-abc"
    (staging / "m").mkdir(parents=True)
    (staging / "m" / "a.prototxt").write_bytes(b"half")
    mine = dest / "m" / f".b.caffemodel.{os.getpid()}.zz.part"  # a live fetch's file is left alone
    mine.write_bytes(b"live")
    fetch.fetch("attack-test", url_base=server.base + "/ok", progress=None)
    assert not part.exists() and not staging.exists() and mine.exists()


KILLED = r"""
import sys
from refnet import fetch, zoo
files = (zoo.ModelFile("m/a.prototxt", "model", "http://unused/a", sys.argv[3], size=int(sys.argv[4])),)
m = zoo.ModelEntry("attack-kill", "caffe", "classify", files, license="-", description="-")
zoo.REGISTRY[m.name] = m
zoo._ALIASES[m.name] = m.name
fetch.fetch("attack-kill", sys.argv[1], url_base=sys.argv[2], progress=None, timeout=60)
"""


def test_a_really_killed_fetch_leaves_nothing_after_the_next_run(server, entry, tmp_path):
    """SIGKILL a fetch in the middle of a trickled body: it leaves a staging folder with a
    .part file; the next fetch removes both and installs the model."""
    import signal
    import subprocess
    import sys

    dest = tmp_path / "cache"
    p = subprocess.Popen([sys.executable, "-c", KILLED, str(dest), server.base + "/trickle",
                          hashlib.sha256(A).hexdigest(), str(len(A))])
    try:
        for _ in range(300):  # until the .part file exists (bounded: 30 s)
            if any(q.name.endswith(".part") for q in dest.rglob("*")) if dest.exists() else False:
                break
            time.sleep(0.1)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    left = _all_files(dest)
    assert any(x.endswith(".part") for x in left) and any(x.startswith(".refnet-staging-") for x in left), left
    paths = fetch.fetch("attack-test", url_base=server.base + "/ok", progress=None)
    assert _all_files(dest) == ["m", "m/a.prototxt", "m/b.caffemodel"] and paths[0].read_bytes() == A


def test_present_file_with_wrong_checksum_is_not_reported_present(server, entry, tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "m").mkdir(parents=True)
    (models / "m" / "a.prototxt").write_bytes(b"tampered")
    (models / "m" / "b.caffemodel").write_bytes(B)
    monkeypatch.setenv("REFNET_MODELS", str(models))
    paths = fetch.fetch("attack-test", url_base=server.base + "/ok", progress=None)
    assert paths == [tmp_path / "cache" / "m" / "a.prototxt", models / "m" / "b.caffemodel"]
    assert paths[0].read_bytes() == A


def test_cli_timeout_inf_and_malformed_http_exit_2(server, entry, capsys):
    with pytest.raises(SystemExit) as ei:
        main(["models", "fetch", "attack-test", "--timeout", "inf"])
    assert ei.value.code == 2
    capsys.readouterr()
    assert main(["models", "fetch", "attack-test", "--quiet", "--url-base", server.base + "/raw"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("refnet: error: ") and "malformed" in err[0]

