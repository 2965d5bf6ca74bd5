"""Downloads against a real HTTP server on 127.0.0.1."""

import socket
import time

import pandas as pd
import pytest

from imgsim.ingest import catalog, download, safety
from imgsim.ingest.download import DownloadConfig, fetch, make_session

pytestmark = pytest.mark.usefixtures("allow_private_urls")

FAST = DownloadConfig(workers=4, connect_timeout=2, read_timeout=1.0, retries=2, backoff=0.01,
                      max_bytes=1024 * 1024)


@pytest.mark.parametrize("path, status, words", [
    ("/good/a.jpg", download.OK, "bytes"),
    ("/missing.jpg", download.FAILED_TO_DOWNLOAD, "HTTP 404"),
    ("/slow.jpg", download.FAILED_TO_DOWNLOAD, "timed out"),
    ("/truncated.jpg", download.FAILED_TO_DOWNLOAD, "closed before the body was complete"),
    ("/page.jpg", download.FAILED_TO_DECODE, "HTML page"),
    ("/huge.jpg", download.TOO_LARGE, "cap"),
    ("/loop.jpg", download.FAILED_TO_DOWNLOAD, "redirect"),
])
def test_fetch_reports_each_failure(http_server, path, status, words):
    base, _ = http_server
    result = fetch(make_session(FAST), base + path, FAST)
    assert result.status == status
    assert words in result.message


def test_server_error_is_retried(http_server):
    base, counts = http_server
    result = fetch(make_session(FAST), base + "/flaky-once.jpg", FAST)
    assert result.status == download.OK
    assert counts["/flaky-once.jpg"] == 2


def write_flipkart_csv(path, base):
    urls = {"p1": "/good/1.jpg", "p2": "/missing.jpg", "p3": "/flaky-csv.jpg", "p4": "/page.jpg",
            "p5": "/truncated.jpg", "p6": "/good/6.jpg"}
    rows = [{
        "uniq_id": pid, "product_name": f"Product {pid}",
        "product_category_tree": '["Clothing >> Women\'s Clothing >> Shorts >> Alisha Shorts"]',
        "image": f'["{base}{url}", "{base}/good/second.jpg"]', "brand": "Alisha", "retail_price": "999",
    } for pid, url in urls.items()]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_csv_import_records_every_row_and_rerun_fetches_only_failures(http_server, tmp_path):
    base, counts = http_server
    csv = tmp_path / "flipkart.csv"
    write_flipkart_csv(csv, base)
    config = DownloadConfig(workers=3, read_timeout=1.0, retries=0, backoff=0.01)
    cat = catalog.ingest(str(csv), tmp_path / "cat", download_config=config)
    status = dict(zip(cat.items["id"], cat.items["status"]))
    assert status == {"p1": "ok", "p2": "failed_to_download", "p3": "failed_to_download",
                      "p4": "failed_to_decode", "p5": "failed_to_download", "p6": "ok"}
    row = cat.items.set_index("id").loc["p1"]
    assert (row["category"], row["subcategory"], row["price"]) == ("Clothing", "Women's Clothing", "999")
    assert row["category_path"] == "Clothing > Women's Clothing > Shorts > Alisha Shorts"
    assert not [p for p in (tmp_path / "cat").rglob("*") if ".part" in p.name or ".tmp" in p.name]

    before = dict(counts)
    cat = catalog.ingest(str(csv), tmp_path / "cat", download_config=config)
    assert counts.get("/good/1.jpg") == before.get("/good/1.jpg")  # not fetched again
    assert counts["/missing.jpg"] == before["/missing.jpg"] + 1  # failures are retried
    assert dict(zip(cat.items["id"], cat.items["status"]))["p3"] == "ok"  # 500 then 200


@pytest.mark.parametrize("path", ["/drip-length.jpg", "/drip-close.jpg", "/drip-headers.jpg"])
def test_a_drip_feed_is_cut_at_the_total_deadline(hostile_server, path):
    # One byte a second never trips the 1.5 s read timeout; only the total deadline can stop it.
    config = DownloadConfig(read_timeout=1.5, total_timeout=2.0, retries=0)
    started = time.monotonic()
    result = fetch(make_session(config), hostile_server + path, config)
    elapsed = time.monotonic() - started
    assert result.status == download.FAILED_TO_DOWNLOAD and "deadline" in result.message
    assert elapsed < 4.0


def test_loopback_is_refused_unless_the_operator_allows_it(http_server, monkeypatch):
    base, counts = http_server
    monkeypatch.delenv("IMGSIM_ALLOW_PRIVATE_URLS")
    before = counts.get("/good/refused.jpg", 0)
    result = fetch(make_session(FAST), base + "/good/refused.jpg", FAST)
    assert result.status == download.FAILED_TO_DOWNLOAD
    assert "IMGSIM_ALLOW_PRIVATE_URLS" in result.message and "loopback" in result.message
    assert counts.get("/good/refused.jpg", 0) == before  # no request reached the server


def _stub_dns(monkeypatch, answers):
    """Makes getaddrinfo answer `answers[name]`; IP literals resolve as usual (no network)."""
    real = socket.getaddrinfo
    calls = []

    def fake(host, port, *args, **kwargs):
        if host in answers:
            calls.append(host)
            ip = answers[host] if isinstance(answers[host], str) else answers[host][min(len(calls), len(answers[host])) - 1]
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return calls


@pytest.mark.parametrize("ip, kind", [
    ("10.1.2.3", "private"), ("192.168.0.10", "private"), ("172.16.5.5", "private"),
    ("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"), ("::1", "loopback"),
    ("fe80::1", "link-local"), ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"),
    ("::ffff:10.0.0.1", "private"), ("100.64.0.1", ""), ("240.0.0.1", "reserved"),
])
def test_private_addresses_are_refused_after_dns(monkeypatch, ip, kind):
    monkeypatch.delenv("IMGSIM_ALLOW_PRIVATE_URLS")
    _stub_dns(monkeypatch, {"images.example.test": ip})
    with pytest.raises(safety.AddressRefusedError, match="IMGSIM_ALLOW_PRIVATE_URLS") as info:
        safety.resolve_public("images.example.test", 443)
    assert kind in str(info.value)
    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")
    assert safety.resolve_public("images.example.test", 443)[0][1] == ip


def test_public_addresses_pass_the_check(monkeypatch):
    monkeypatch.delenv("IMGSIM_ALLOW_PRIVATE_URLS")
    _stub_dns(monkeypatch, {"cdn.example.test": "93.184.216.34"})
    assert safety.resolve_public("cdn.example.test", 80) == [(socket.AF_INET, "93.184.216.34")]


@pytest.fixture
def loopback_counts_as_public(monkeypatch):
    """127.0.0.1 passes the address check (standing in for a public server); nothing else does."""
    monkeypatch.delenv("IMGSIM_ALLOW_PRIVATE_URLS")
    real = safety.address_problem
    monkeypatch.setattr(safety, "address_problem", lambda ip: None if ip == "127.0.0.1" else real(ip))


@pytest.mark.parametrize("target, words", [
    ("http://127.0.0.2:{port}/ok.jpg", "loopback"),      # redirect to the server's own loopback
    ("http://10.0.0.1/latest/meta-data", "private"),      # refused before any packet is sent
    ("file:///etc/passwd", "non-http(s)"),
])
def test_every_redirect_hop_is_checked(hostile_server, loopback_counts_as_public, target, words):
    port = hostile_server.rsplit(":", 1)[1]
    result = fetch(make_session(FAST), f"{hostile_server}/redirect?{target.format(port=port)}", FAST)
    assert result.status == download.FAILED_TO_DOWNLOAD and words in result.message


def test_a_redirect_to_an_allowed_host_is_followed(hostile_server, loopback_counts_as_public):
    result = fetch(make_session(FAST), f"{hostile_server}/redirect?/ok.jpg", FAST)
    assert result.status == download.OK


def test_the_connection_goes_to_the_address_that_was_checked(hostile_server, loopback_counts_as_public,
                                                            monkeypatch):
    # The name resolves to an allowed address once, then "rebinds" to a private one: the
    # connection uses the first answer (the one checked); a later lookup is refused.
    port = hostile_server.rsplit(":", 1)[1]
    calls = _stub_dns(monkeypatch, {"shop.example.test": ["127.0.0.1", "10.0.0.1"]})
    result = fetch(make_session(FAST), f"http://shop.example.test:{port}/ok.jpg", FAST)
    assert result.status == download.OK and calls == ["shop.example.test"]
    again = fetch(make_session(FAST), f"http://shop.example.test:{port}/ok.jpg", FAST)
    assert again.status == download.FAILED_TO_DOWNLOAD and "10.0.0.1" in again.message


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An HTTPS server on 127.0.0.1 whose certificate names shop.example.test (made by openssl)."""
    import http.server
    import shutil
    import ssl
    import subprocess

    from conftest import jpeg_bytes, serve, solid

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
                    "-subj", "/CN=shop.example.test", "-addext", "subjectAltName=DNS:shop.example.test"],
                   check=True, capture_output=True)
    image = jpeg_bytes(solid((10, 200, 10)))

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(image)))
            self.end_headers()
            self.wfile.write(image)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    with serve(Handler, tls=context) as port:
        yield port, folder / "cert.pem"


def test_https_connects_to_the_checked_address_and_still_verifies_the_name(tls_server, monkeypatch):
    port, cert = tls_server
    calls = _stub_dns(monkeypatch, {"shop.example.test": "127.0.0.1"})
    session = make_session(FAST)
    session.verify = str(cert)
    result = fetch(session, f"https://shop.example.test:{port}/a.jpg", FAST)
    assert result.status == download.OK and calls == ["shop.example.test"]
    wrong_name = fetch(session, f"https://127.0.0.1:{port}/a.jpg", FAST)  # cert is not for the IP
    assert wrong_name.status == download.FAILED_TO_DOWNLOAD and "certificate" in wrong_name.message.lower()


@pytest.fixture(scope="module")
def busy_server():
    """A server on 127.0.0.1 whose first answer to each path is 429 with a ``Retry-After``.

    ``/after/25`` asks for 25 s, ``/date/25`` for an HTTP date 25 s ahead; the next request
    to the same path gets an image. ``/down/N`` answers 503 every time, with no ``Retry-After``.
    Yields the base URL and the request count of each path.
    """
    import email.utils
    import http.server
    import threading

    from conftest import jpeg_bytes, solid

    image = jpeg_bytes(solid((200, 200, 10)))
    counts: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            counts[self.path] = counts.get(self.path, 0) + 1
            _, form, seconds = self.path.split("/")
            if form == "down":
                self.send_response(503)
                self.send_header("Content-Length", "0")
            elif counts[self.path] == 1:
                after = int(seconds)
                self.send_response(429)
                self.send_header("Retry-After", str(after) if form == "after" else
                                 email.utils.formatdate(time.time() + after, usegmt=True))
                self.send_header("Content-Length", "0")
            else:
                self.send_response(200)
                self.send_header("Content-Length", str(len(image)))
            self.end_headers()
            if counts[self.path] > 1 and form != "down":
                self.wfile.write(image)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", counts
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("form", ["after", "date"])
def test_a_retry_after_past_the_deadline_ends_the_download_at_once(busy_server, form):
    base, counts = busy_server
    config = DownloadConfig(read_timeout=1.0, total_timeout=4.0, retries=3, backoff=0.01)
    started = time.monotonic()
    result = fetch(make_session(config), f"{base}/{form}/25", config)
    assert result.status == download.FAILED_TO_DOWNLOAD
    assert "HTTP 429" in result.message and "4 s deadline" in result.message
    assert counts[f"/{form}/25"] == 1  # given up without a second request
    assert time.monotonic() - started < 10  # a guard only: the bug slept the whole 25 s


def test_a_retry_after_within_the_deadline_is_honoured(busy_server):
    base, counts = busy_server
    config = DownloadConfig(read_timeout=1.0, total_timeout=4.0, retries=3, backoff=0.01)
    result = fetch(make_session(config), f"{base}/after/1", config)
    assert result.status == download.OK
    assert counts["/after/1"] == 2


def test_a_backoff_past_the_deadline_ends_the_download_at_once(busy_server):
    base, counts = busy_server
    # urllib3 retries the first failure at once, then waits backoff * 2 = 20 s: past the deadline.
    config = DownloadConfig(read_timeout=1.0, total_timeout=4.0, retries=3, backoff=10.0)
    result = fetch(make_session(config), f"{base}/down/1", config)
    assert result.status == download.FAILED_TO_DOWNLOAD
    assert "HTTP 503" in result.message and "next retry" in result.message
    assert counts["/down/1"] == 2


@pytest.mark.parametrize("field, value", [
    ("read_timeout", float("inf")), ("read_timeout", float("nan")), ("connect_timeout", 0.0),
    ("total_timeout", float("inf")), ("max_bytes", 2**70), ("workers", 10**9),
    ("retries", -1), ("retries", 1.5), ("backoff", float("nan")), ("workers", True),
])
def test_the_config_refuses_non_finite_and_absurd_numbers(field, value):
    with pytest.raises(ValueError, match=f"`{field}` must be"):
        DownloadConfig(**{field: value})
