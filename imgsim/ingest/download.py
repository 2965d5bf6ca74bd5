"""Downloading product images over HTTP, politely, safely and without losing a row.

One :class:`requests.Session` with a pooled adapter serves all workers. Connection errors, 429
and 5xx answers are retried with exponential backoff (honouring ``Retry-After`` while it fits
in the transfer's deadline: a longer wait ends the transfer at once); bodies are
capped in size, checked to decode as images, and written under a temporary name that is renamed
into place, so no partial file ever exists.

Safety: every connection resolves its host, refuses private, loopback, link-local, multicast
and reserved addresses (see :func:`imgsim.ingest.safety.resolve_public`; ``IMGSIM_ALLOW_PRIVATE_URLS=1``
lifts this) and connects to exactly the address it checked, so a DNS answer that changes
between the check and the connection cannot reach a private host. Redirects are followed here,
one hop at a time, each hop going through the same check. A watchdog shuts the sockets of a
transfer down when its total deadline passes, so a server that drips one byte a second (in the
headers or the body, with or without a Content-Length) cannot hold a worker.
"""

from __future__ import annotations

import dataclasses
import numbers
import socket
import threading
import time
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.retry import Retry

from imgsim.errors import ImgsimError
from imgsim.ingest import safety
from imgsim.ingest.images import ImageDecodeError, decode_image

OK = "ok"
FAILED_TO_DOWNLOAD = "failed_to_download"
FAILED_TO_DECODE = "failed_to_decode"
TOO_LARGE = "too_large"

MAX_BYTES_LIMIT = 200 * 2**20
# The accepted range of each number in :class:`DownloadConfig` (the CLI states the same ranges).
# Beyond these a value is a typo or an attack: an hour-long timeout holds a worker, an
# unbounded cap lets one body fill the memory.
LIMITS: dict[str, tuple[float, float]] = {
    "workers": (1, 64),
    "connect_timeout": (0.1, 300.0),
    "read_timeout": (0.1, 300.0),
    "total_timeout": (0.1, 1200.0),
    "retries": (0, 10),
    "backoff": (0.0, 60.0),
    "max_bytes": (1, MAX_BYTES_LIMIT),
    "max_redirects": (0, 20),
}
_WHOLE = frozenset({"workers", "retries", "max_bytes", "max_redirects"})


@dataclasses.dataclass(frozen=True)
class DownloadConfig:
    """How images are fetched.

    Attributes:
        workers: Parallel downloads.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for each read.
        total_timeout: Seconds a whole transfer may take, redirects, retries and the waits
            between them included (default ``4 * read_timeout``); enforced by closing the
            connection, and by giving up on a retry whose wait would pass it.
        retries: Retries after the first try, on connection errors, 429 and 5xx.
        backoff: Base of the exponential backoff between retries, in seconds.
        max_bytes: Largest body accepted.
        user_agent: Sent with each request.
        max_redirects: Redirect hops followed.

    Every number must be finite and within its range in :data:`LIMITS`.
    """

    workers: int = 8
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_timeout: float | None = None
    retries: int = 3
    backoff: float = 0.5
    max_bytes: int = 20 * 1024 * 1024
    user_agent: str = "imgsim/0.1 (+https://github.com/imgsim/imgsim)"
    max_redirects: int = 5

    def __post_init__(self) -> None:
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if name == "total_timeout" and value is None:
                continue
            _check_number(name, value, low, high, integer=name in _WHOLE)

    @property
    def deadline(self) -> float:
        """Seconds one URL may take in all."""
        return self.total_timeout if self.total_timeout is not None else 4 * self.read_timeout


def _check_number(name: str, value: object, low: float, high: float, *, integer: bool) -> None:
    """Raises ``ValueError`` unless ``value`` is a finite number (whole if ``integer``) in range."""
    kind_ok = isinstance(value, numbers.Integral if integer else numbers.Real)
    if isinstance(value, bool) or not kind_ok:
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={value!r}")
    if not low <= value <= high:  # also false for nan; inf is out of every range
        raise ValueError(f"`{name}` must be in [{low}, {high}]. Received: {name}={value!r}")


@dataclasses.dataclass(frozen=True)
class DownloadResult:
    """What happened to one URL: a status, a message, and on success the bytes."""

    url: str
    status: str
    message: str
    content: bytes | None = None


_local = threading.local()


class _Watchdog:
    """Shuts down every socket of one transfer once its deadline passes."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.seconds = seconds
        self._ends = time.monotonic() + seconds
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        _local.watchdog = self
        self._ends = time.monotonic() + self.seconds
        self._timer.start()
        return self

    def remaining(self) -> float:
        """Seconds left before the deadline."""
        return self._ends - time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _local.watchdog = None

    def add(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if sock not in self._sockets:
                self._sockets.append(sock)
            if self.fired:
                _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    # The plain-socket shutdown wakes a thread blocked in recv (also under TLS) without
    # touching the TLS object that thread is using; close() would not wake it.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def _watch(sock: socket.socket | None) -> None:
    watchdog = getattr(_local, "watchdog", None)
    if watchdog is not None:
        watchdog.add(sock)


class _RetryPastDeadlineError(ImgsimError, RuntimeError):
    """The wait before the next retry would end after the transfer's deadline."""


class _DeadlineRetry(Retry):
    """A Retry whose waits (``Retry-After`` or backoff) never outlast the transfer's deadline.

    urllib3 sleeps between tries, where the watchdog has no socket to shut; so a wait that
    would pass the deadline ends the transfer at once instead of being slept through.
    """

    def sleep(self, response=None) -> None:  # noqa: ANN001 - urllib3's signature
        watchdog = getattr(_local, "watchdog", None)
        if watchdog is not None:
            asked = self.get_retry_after(response) if response is not None else None
            wait = asked or self.get_backoff_time()  # urllib3 backs off when Retry-After is 0
            if wait >= watchdog.remaining():
                if response is not None:
                    response.release_conn()
                cause = f"HTTP {response.status}" if response is not None else "the connection failed"
                how = "the server asked to wait" if asked else "the next retry was due in"
                raise _RetryPastDeadlineError(
                    f"{cause}; {how} {wait:g} s, past the {watchdog.seconds:g} s deadline"
                )
        super().sleep(response)


class _CheckedConnectionMixin:
    """Connects only to addresses :func:`imgsim.ingest.safety.resolve_public` accepts, and watches them."""

    def _new_conn(self) -> socket.socket:
        host = self._dns_host
        pairs = safety.resolve_public(host, self.port)
        last: Exception | None = None
        for _family, ip in pairs:
            # Connect to the very address that was checked; TLS still verifies `self.host`.
            self._dns_host = ip
            try:
                sock = super()._new_conn()
            except (NewConnectionError, ConnectTimeoutError) as err:
                last = err
                continue
            finally:
                self._dns_host = host
            _watch(sock)
            return sock
        assert last is not None
        raise last

    def request(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - urllib3's signature
        _watch(self.sock)  # a pooled connection reused by this transfer
        return super().request(*args, **kwargs)


class _CheckedHTTPConnection(_CheckedConnectionMixin, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_CheckedConnectionMixin, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools use the checked connections."""

    def init_poolmanager(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _CheckedHTTPPool,
                                                   "https": _CheckedHTTPSPool}


def make_session(config: DownloadConfig) -> requests.Session:
    """A Session whose adapter pools ``config.workers`` connections and retries with backoff.

    Its connections go only to public addresses (unless ``IMGSIM_ALLOW_PRIVATE_URLS=1``), and
    it ignores proxy settings from the environment, since a proxy would resolve names where
    imgsim cannot check them.
    """
    retry = _DeadlineRetry(
        total=config.retries,
        connect=config.retries,
        read=config.retries,
        status=config.retries,
        backoff_factor=config.backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,  # hand back the last answer so its status is reported
    )
    adapter = _CheckedAdapter(max_retries=retry, pool_connections=4, pool_maxsize=config.workers)
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = config.user_agent
    return session


def fetch(session: requests.Session, url: str, config: DownloadConfig) -> DownloadResult:
    """Downloads one image URL and checks that the body decodes.

    Never raises for network or content problems: they come back as a status and message.
    Redirects are followed here, each hop checked like the first; the whole transfer ends at
    ``config.deadline`` seconds.

    Args:
        session: From :func:`make_session`.
        url: An ``http://`` or ``https://`` URL.
        config: Timeouts and limits.

    Returns:
        A :class:`DownloadResult`; ``content`` holds the body when ``status == "ok"``.
    """
    if not url.startswith(("http://", "https://")):
        return DownloadResult(url, FAILED_TO_DOWNLOAD, f"not an http(s) URL: {url[:80]!r}")
    with _Watchdog(config.deadline) as watchdog:
        try:
            result = _transfer(session, url, config)
        except requests.RequestException as err:
            result = _describe_request_error(url, err, config)
        except safety.AddressRefusedError as err:
            result = DownloadResult(url, FAILED_TO_DOWNLOAD, f"refused: {err}")
        except _RetryPastDeadlineError as err:
            result = DownloadResult(url, FAILED_TO_DOWNLOAD, str(err))
    if watchdog.fired:
        return DownloadResult(
            url, FAILED_TO_DOWNLOAD, f"transfer took over {config.deadline:g} s (the deadline)"
        )
    if isinstance(result, DownloadResult):
        return result
    body = result
    try:
        decode_image(body, max_side=64)
    except ImageDecodeError as err:
        return DownloadResult(url, FAILED_TO_DECODE, str(err).replace("the image: ", "", 1))
    return DownloadResult(url, OK, f"{len(body)} bytes", body)


def _transfer(session: requests.Session, url: str, config: DownloadConfig) -> bytes | DownloadResult:
    """Follows redirects by hand and reads the body under the size cap."""
    current = url
    for hop in range(config.max_redirects + 1):
        parts = urlsplit(current)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return DownloadResult(
                url, FAILED_TO_DOWNLOAD, f"redirected to a non-http(s) URL: {current[:80]!r}"
            )
        try:
            response = session.get(
                current, timeout=(config.connect_timeout, config.read_timeout), stream=True,
                allow_redirects=False,
            )
        except safety.AddressRefusedError as err:
            where = f"redirect {hop} to {parts.hostname}: " if hop else ""
            return DownloadResult(url, FAILED_TO_DOWNLOAD, f"refused: {where}{err}")
        with response:
            if response.is_redirect:
                current = urljoin(current, response.headers["Location"])
                continue
            if response.status_code >= 400:
                return DownloadResult(
                    url, FAILED_TO_DOWNLOAD,
                    f"HTTP {response.status_code} {response.reason or ''}".strip(),
                )
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > config.max_bytes:
                return DownloadResult(
                    url, TOO_LARGE,
                    f"body of {int(declared)} bytes exceeds the {config.max_bytes}-byte cap",
                )
            chunks, size = [], 0
            for chunk in response.iter_content(chunk_size=64 * 1024):
                size += len(chunk)
                if size > config.max_bytes:
                    return DownloadResult(
                        url, TOO_LARGE, f"body exceeds the {config.max_bytes}-byte cap"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
    return DownloadResult(url, FAILED_TO_DOWNLOAD, "too many redirects (a redirect loop?)")


def _describe_request_error(
    url: str, err: requests.RequestException, config: DownloadConfig
) -> DownloadResult:
    if isinstance(err, requests.TooManyRedirects):
        return DownloadResult(url, FAILED_TO_DOWNLOAD, "too many redirects (a redirect loop?)")
    if isinstance(err, requests.Timeout):
        return DownloadResult(
            url, FAILED_TO_DOWNLOAD,
            f"timed out (connect {config.connect_timeout:g} s, read {config.read_timeout:g} s)",
        )
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return DownloadResult(
            url, FAILED_TO_DOWNLOAD, "the connection closed before the body was complete"
        )
    if isinstance(err, requests.ConnectionError):
        return DownloadResult(url, FAILED_TO_DOWNLOAD, f"connection failed: {str(err)[:200]}")
    return DownloadResult(url, FAILED_TO_DOWNLOAD, f"{type(err).__name__}: {str(err)[:200]}")
