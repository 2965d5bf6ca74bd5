"""Tiny data for the tests: images of every awkward kind, local HTTP servers, a small catalogue,
and the one fake extractor."""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parents[1]
MYNTRA = REPO.parent / "shared" / "data" / "myntra_eval"

# One cache for the whole run, so Lite0's weights are converted once; per-test data dirs.
_CACHE = Path(os.environ.get("IMGSIM_TEST_CACHE") or REPO / ".pytest_cache" / "imgsim-cache")
os.environ["IMGSIM_CACHE_DIR"] = str(_CACHE)


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMGSIM_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def jpeg_bytes(rgb: np.ndarray, **save_args) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95, **save_args)
    return buf.getvalue()


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def solid(colour: tuple[int, int, int], size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), colour, np.uint8)


def marked(width: int = 40, height: int = 24) -> np.ndarray:
    """A white image with a red block in its top-left corner: shows where 'up' ended."""
    arr = np.full((height, width, 3), 255, np.uint8)
    arr[:8, :8] = (255, 0, 0)
    return arr


def exif_jpeg(orientation: int) -> bytes:
    """A JPEG whose stored pixels, shown with ``orientation``, give :func:`marked`."""
    base = Image.fromarray(marked())
    # The inverse of what the viewer applies, so that applying it gives `marked` back.
    inverse = {
        1: [], 2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
        4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
        6: [Image.Transpose.ROTATE_90], 7: [Image.Transpose.TRANSVERSE],
        8: [Image.Transpose.ROTATE_270],
    }[orientation]
    for op in inverse:
        base = base.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    base.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def bomb_png(width: int = 60000, height: int = 60000) -> bytes:
    """A PNG header that declares an enormous image (its data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A dozen small files: one of each kind of image (and non-image) phones and shops send."""
    root = tmp_path_factory.mktemp("samples")
    files: dict[str, bytes] = {}
    files["red.jpg"] = jpeg_bytes(solid((220, 20, 20)))
    grad = np.zeros((32, 32, 3), np.uint8)
    grad[..., 0] = np.linspace(0, 255, 32)[None, :]
    grad[..., 2] = np.linspace(0, 255, 32)[:, None]
    files["gradient.png"] = png_bytes(Image.fromarray(grad))
    files["grey.png"] = png_bytes(Image.fromarray(np.full((32, 32), 128, np.uint8), mode="L"))
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = (0, 0, 255, 255)  # a blue square on a fully transparent background
    files["rgba.png"] = png_bytes(Image.fromarray(rgba, mode="RGBA"))
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    buf = io.BytesIO()
    cmyk.save(buf, format="JPEG", quality=95)
    files["cmyk.jpg"] = buf.getvalue()
    sixteen = Image.fromarray(np.full((32, 32), 65535 // 2, np.uint16))
    files["sixteen.png"] = png_bytes(sixteen)
    pal = Image.fromarray(solid((0, 200, 0))).convert("P", palette=Image.Palette.ADAPTIVE)
    buf = io.BytesIO()
    pal.save(buf, format="GIF")
    files["palette.gif"] = buf.getvalue()
    for fmt, ext in (("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tiff")):
        buf = io.BytesIO()
        Image.fromarray(solid((10, 10, 200))).save(buf, format=fmt)
        files[f"blue.{ext}"] = buf.getvalue()
    try:
        import pillow_heif  # noqa: F401

        buf = io.BytesIO()
        Image.fromarray(solid((200, 200, 10))).save(buf, format="HEIF", quality=95)
        files["yellow.heic"] = buf.getvalue()
    except (ImportError, KeyError, OSError):
        pass
    files["rotated.jpg"] = exif_jpeg(6)
    full = jpeg_bytes(solid((20, 200, 20), 64))
    files["truncated.jpg"] = full[: len(full) // 2]
    files["empty.jpg"] = b""
    files["text.jpg"] = b"this is not an image, just some words\n"
    files["page.jpg"] = b"<!DOCTYPE html><html><body>Access denied</body></html>"
    files["bomb.png"] = bomb_png()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return {name: root / name for name in files}


class FakeExtractor:
    """A deterministic extractor for fast tests: each image's mean colour and a constant 1, as a
    unit row. ``fail_after`` calls, it raises (a power cut mid-build); ``calls`` counts batches."""

    name, dim, image_size = "fake", 4, 8

    def __init__(self, fingerprint: str = "v1", fail_after: int | None = None) -> None:
        self.fingerprint = fingerprint
        self.options: dict = {}
        self.calls = 0
        self.fail_after = fail_after

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """``(N, 8, 8, 3)`` uint8 -> ``(N, 4)`` float32 unit rows."""
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("power cut")
        mean = batch.reshape(len(batch), self.image_size ** 2, 3).mean(axis=1) / 255
        rows = np.concatenate([mean, np.ones((len(batch), 1))], axis=1)
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@contextlib.contextmanager
def serve(handler: type[http.server.BaseHTTPRequestHandler], tls=None) -> Iterator[int]:
    """A real HTTP server (HTTPS with an ``ssl.SSLContext``) on 127.0.0.1 in a thread; yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves the scenarios a product-image download meets in the wild."""

    counts: dict[str, int] = {}
    image = jpeg_bytes(solid((200, 30, 30)))

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, code: int, body: bytes, content_type: str = "image/jpeg", length: int | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        self.counts[path] = self.counts.get(path, 0) + 1
        if path.startswith("/good/"):
            self._send(200, self.image)
        elif path == "/missing.jpg":
            self._send(404, b"not found", "text/plain")
        elif path.startswith("/flaky"):
            if self.counts[path] == 1:
                self._send(500, b"oops", "text/plain")
            else:
                self._send(200, self.image)
        elif path == "/slow.jpg":
            time.sleep(2.5)
            self._send(200, self.image)
        elif path == "/truncated.jpg":
            self._send(200, self.image[:200], length=len(self.image))
            self.close_connection = True
        elif path == "/page.jpg":
            self._send(200, b"<html><body>Please log in</body></html>", "text/html")
        elif path == "/huge.jpg":
            self._send(200, b"\xff" * (3 * 1024 * 1024))
        elif path == "/loop.jpg":
            self.send_response(302)
            self.send_header("Location", "/loop.jpg")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"unknown", "text/plain")


@pytest.fixture(scope="session")
def http_server():
    """A real HTTP server on 127.0.0.1; yields its base URL and per-path request counts."""
    with serve(_Handler) as port:
        yield f"http://127.0.0.1:{port}", _Handler.counts


def make_shop(root: Path, per_class: int = 4) -> Path:
    """A folder shop: three categories whose images differ in colour and shape, plus one bad file."""
    rng = np.random.default_rng(0)
    colours = {"reds": (210, 30, 30), "greens": (30, 180, 40), "blues": (30, 50, 210)}
    for category, colour in colours.items():
        (root / category).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.full((48, 40, 3), 255, np.uint8)
            y, x = rng.integers(0, 16, 2)
            arr[y:y + 30, x:x + 24] = np.clip(np.array(colour) + rng.integers(-20, 20, 3), 0, 255)
            Image.fromarray(arr).save(root / category / f"{category[:-1]}_{i}.png")
    (root / "reds" / "broken.jpg").write_bytes(b"not really a jpeg")
    return root


@pytest.fixture(scope="session")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shop(tmp_path_factory.mktemp("shop"))


@pytest.fixture(scope="session")
def built_catalog(tmp_path_factory: pytest.TempPathFactory, shop_dir: Path) -> Path:
    """The shop built with both approaches (tiny autoencoder, two epochs)."""
    from imgsim.approaches.autoencoder import AutoencoderConfig
    from imgsim.build import BuildOptions, build

    out = tmp_path_factory.mktemp("catalogs") / "shop"
    options = BuildOptions(approaches=("pretrained", "autoencoder"),
                           settings={"autoencoder": AutoencoderConfig(image_size=16, latent_dim=8, epochs=2)})
    build(str(shop_dir), out, options)
    return out


@pytest.fixture
def allow_private_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lets downloads reach the 127.0.0.1 test servers (imgsim refuses loopback by default)."""
    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")


class _HostileHandler(http.server.BaseHTTPRequestHandler):
    """Servers that misbehave on purpose: drip feeds and redirects elsewhere."""

    image = jpeg_bytes(solid((30, 30, 200)))
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:
        pass

    def _drip(self, data: bytes, delay: float) -> None:
        try:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(delay)
        except OSError:  # the client gave up, as it should
            pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path, _, query = self.path.partition("?")
        if path == "/drip-length.jpg":  # 1 byte a second, with an honest Content-Length
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(self.image)))
            self.end_headers()
            self._drip(self.image, 1.0)
        elif path == "/drip-close.jpg":  # 1 byte a second, delimited by closing the connection
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            self._drip(self.image, 1.0)
        elif path == "/drip-headers.jpg":  # even the status line arrives a byte a second
            self._drip(b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n" + b"X: y\r\n" * 1000, 1.0)
        elif path == "/redirect":  # Location taken from the query string, verbatim
            from urllib.parse import unquote

            self.send_response(302)
            self.send_header("Location", unquote(query))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/ok.jpg":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(self.image)))
            self.end_headers()
            self.wfile.write(self.image)
        else:
            self.send_error(404)


@pytest.fixture(scope="session")
def hostile_server():
    """A misbehaving HTTP server on 127.0.0.1; yields its base URL."""
    with serve(_HostileHandler) as port:
        yield f"http://127.0.0.1:{port}"


class _TrackerHandler(http.server.BaseHTTPRequestHandler):
    """Answers everything with 204 and records the path: a request here is a leak."""

    def log_message(self, *args) -> None:
        pass

    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        self.send_response(204)
        self.end_headers()

    do_HEAD = do_POST = do_GET  # noqa: N815


@pytest.fixture(scope="session")
def tracker():
    """A server on 127.0.0.1 that hostile catalogue text points at; yields (base URL, requests)."""
    with serve(_TrackerHandler) as port:
        yield f"http://127.0.0.1:{port}", _TrackerHandler.requests


def hostile_names(base: str) -> dict[str, str]:
    """Product names that are Markdown, HTML and LaTeX fetching from ``base``, by image path."""
    return {
        "reds/red_0.png": f"![x]({base}/t.png)",
        "greens/green_0.png": f"[link]({base}/l) <img src='{base}/i.png'>",
        "blues/blue_0.png": "**bold** _it_ `code` $x^2$",
        # a long name cut on a result card once showed as raw "**10. ... candleholder **"
        "blues/blue_1.png": "An important part of Hanukkah is the menorah—a candleholder **with nine** branches",
    }


@pytest.fixture(scope="session")
def hostile_catalog(tmp_path_factory: pytest.TempPathFactory, shop_dir: Path, tracker) -> Path:
    """The shop of :func:`built_catalog`, named by :func:`hostile_names`; the reds' category is
    an image pointing at the tracker too. The app must show all of it as plain text."""
    import csv

    from imgsim.approaches.autoencoder import AutoencoderConfig
    from imgsim.build import BuildOptions, build

    base = tracker[0]
    names = hostile_names(base)
    labels = tmp_path_factory.mktemp("hostile") / "labels.csv"
    with labels.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "name", "category"])
        for path in sorted(p.relative_to(shop_dir).as_posix() for p in shop_dir.rglob("*.png")):
            category = f"![c]({base}/c.png) reds" if path.startswith("reds/") else path.split("/")[0]
            writer.writerow([path, names.get(path, Path(path).stem.replace("_", " ")), category])
    out = labels.parent / "shop"
    options = BuildOptions(approaches=("pretrained", "autoencoder"), labels=str(labels),
                           settings={"autoencoder": AutoencoderConfig(image_size=16, latent_dim=8, epochs=2)})
    build(str(shop_dir), out, options)
    return out
