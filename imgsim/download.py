"""Downloading product images over HTTP, politely and without losing a row.

One :class:`requests.Session` with a pooled adapter serves all workers. Connection errors, 429
and 5xx answers are retried with exponential backoff (honouring ``Retry-After``); bodies are
capped in size, checked to decode as images, and written under a temporary name that is renamed
into place, so no partial file ever exists.
"""

from __future__ import annotations

import dataclasses
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from imgsim.images import ImageDecodeError, decode_image

OK = "ok"
FAILED_TO_DOWNLOAD = "failed_to_download"
FAILED_TO_DECODE = "failed_to_decode"
TOO_LARGE = "too_large"


@dataclasses.dataclass(frozen=True)
class DownloadConfig:
    """How images are fetched.

    Attributes:
        workers: Parallel downloads.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for each read, and the bound on a whole body's transfer.
        retries: Retries after the first try, on connection errors, 429 and 5xx.
        backoff: Base of the exponential backoff between retries, in seconds.
        max_bytes: Largest body accepted.
        user_agent: Sent with each request.
    """

    workers: int = 8
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    retries: int = 3
    backoff: float = 0.5
    max_bytes: int = 20 * 1024 * 1024
    user_agent: str = "imgsim/0.1 (+https://github.com/imgsim/imgsim)"

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"`workers` must be >= 1. Received: workers={self.workers}")
        if self.retries < 0:
            raise ValueError(f"`retries` must be >= 0. Received: retries={self.retries}")
        if self.max_bytes < 1:
            raise ValueError(f"`max_bytes` must be >= 1. Received: max_bytes={self.max_bytes}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError(
                "timeouts must be > 0. Received: "
                f"connect_timeout={self.connect_timeout}, read_timeout={self.read_timeout}"
            )


@dataclasses.dataclass(frozen=True)
class DownloadResult:
    """What happened to one URL: a status, a message, and on success the bytes."""

    url: str
    status: str
    message: str
    content: bytes | None = None


def make_session(config: DownloadConfig) -> requests.Session:
    """A Session whose adapter pools ``config.workers`` connections and retries with backoff."""
    retry = Retry(
        total=config.retries,
        connect=config.retries,
        read=config.retries,
        status=config.retries,
        backoff_factor=config.backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,  # hand back the last answer so its status is reported
        redirect=5,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=config.workers)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = config.user_agent
    session.max_redirects = 5
    return session


def fetch(session: requests.Session, url: str, config: DownloadConfig) -> DownloadResult:
    """Downloads one image URL and checks that the body decodes.

    Never raises for network or content problems: they come back as a status and message.

    Args:
        session: From :func:`make_session`.
        url: An ``http://`` or ``https://`` URL.
        config: Timeouts and limits.

    Returns:
        A :class:`DownloadResult`; ``content`` holds the body when ``status == "ok"``.
    """
    if not url.startswith(("http://", "https://")):
        return DownloadResult(url, FAILED_TO_DOWNLOAD, f"not an http(s) URL: {url[:80]!r}")
    started = time.monotonic()
    try:
        with session.get(
            url, timeout=(config.connect_timeout, config.read_timeout), stream=True
        ) as response:
            if response.status_code >= 400:
                return DownloadResult(
                    url, FAILED_TO_DOWNLOAD, f"HTTP {response.status_code} {response.reason or ''}".strip()
                )
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > config.max_bytes:
                return DownloadResult(
                    url, TOO_LARGE, f"body of {int(declared)} bytes exceeds the {config.max_bytes}-byte cap"
                )
            chunks, size = [], 0
            for chunk in response.iter_content(chunk_size=64 * 1024):
                size += len(chunk)
                if size > config.max_bytes:
                    return DownloadResult(
                        url, TOO_LARGE, f"body exceeds the {config.max_bytes}-byte cap"
                    )
                if time.monotonic() - started > config.read_timeout * 4:
                    return DownloadResult(
                        url, FAILED_TO_DOWNLOAD, f"transfer took over {config.read_timeout * 4:.0f} s"
                    )
                chunks.append(chunk)
            body = b"".join(chunks)
    except requests.TooManyRedirects:
        return DownloadResult(url, FAILED_TO_DOWNLOAD, "too many redirects (a redirect loop?)")
    except requests.Timeout:
        return DownloadResult(
            url, FAILED_TO_DOWNLOAD, f"timed out (connect {config.connect_timeout:g} s, read {config.read_timeout:g} s)"
        )
    except requests.exceptions.ChunkedEncodingError:
        return DownloadResult(url, FAILED_TO_DOWNLOAD, "the connection closed before the body was complete")
    except requests.ConnectionError as err:
        return DownloadResult(url, FAILED_TO_DOWNLOAD, f"connection failed: {str(err)[:200]}")
    except requests.RequestException as err:
        return DownloadResult(url, FAILED_TO_DOWNLOAD, f"{type(err).__name__}: {str(err)[:200]}")
    try:
        decode_image(body, max_side=64)
    except ImageDecodeError as err:
        return DownloadResult(url, FAILED_TO_DECODE, str(err).replace("the image: ", "", 1))
    return DownloadResult(url, OK, f"{len(body)} bytes", body)
