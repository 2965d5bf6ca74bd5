"""What imgsim may read and where it may connect: regular files, allowed roots, public addresses.

Everything that turns a user-supplied name into bytes goes through this module:

- :func:`read_regular_file` reads a path only if it is a regular file (no FIFO, device,
  directory or symlink loop), never blocks on open, and never reads more than a cap.
- :func:`inside` and :func:`check_local_path` keep paths inside a folder, or inside the roots
  the operator lists in ``IMGSIM_LOCAL_ROOTS`` (``os.pathsep``-separated; unset means none).
- :func:`resolve_public` resolves a host name and refuses private, loopback, link-local,
  multicast and reserved addresses unless the operator sets ``IMGSIM_ALLOW_PRIVATE_URLS=1``;
  :mod:`imgsim.ingest.download` connects only to the addresses it returns.

Messages name the path and the problem, never the contents of a file.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
from pathlib import Path

from imgsim.errors import ImgsimError

LOCAL_ROOTS_ENV = "IMGSIM_LOCAL_ROOTS"
ALLOW_PRIVATE_ENV = "IMGSIM_ALLOW_PRIVATE_URLS"


class FileRefusedError(ImgsimError, ValueError):
    """A path is not a readable regular file, or its file is larger than allowed."""


class PathOutsideError(ImgsimError, ValueError):
    """A path leaves the folder or the roots it must stay inside."""


class AddressRefusedError(ImgsimError, ValueError):
    """A URL's host resolves to an address imgsim will not connect to."""


def describe_kind(mode: int) -> str:
    """Names a non-regular file type for messages (``"a directory"``, ``"a named pipe (FIFO)"``)."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _os_problem(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "is a symlink loop (or too many levels of symlinks)"
    if err.errno == errno.ENOENT:
        return "does not exist"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "cannot be read (permission denied)"
    if err.errno == errno.ENOTDIR:
        return "does not exist (a part of the path is not a folder)"
    if err.errno == errno.ENAMETOOLONG:
        return "has a name that is too long"
    return f"cannot be read ({os.strerror(err.errno) if err.errno else type(err).__name__})"


def check_regular_file(path: str | os.PathLike) -> os.stat_result:
    """Stats ``path`` (following symlinks) and checks that it is a regular file.

    Args:
        path: The file.

    Returns:
        Its ``os.stat_result``.

    Raises:
        FileRefusedError: It does not exist, is a directory, FIFO, device, socket or symlink
            loop, or cannot be read; one line says which.
    """
    try:
        info = os.stat(path)
    except OSError as err:
        raise FileRefusedError(f"{path} {_os_problem(err)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise FileRefusedError(f"{path} is {describe_kind(info.st_mode)}, not a regular file")
    return info


def read_regular_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """Reads a regular file, refusing anything else and anything over ``max_bytes``.

    The file is checked with ``os.stat`` before it is opened, opened with ``O_NONBLOCK`` (so a
    FIFO swapped in after the check cannot block), checked again on the open descriptor, and
    read with a real byte count (``/proc`` files report size 0, devices never end).

    Args:
        path: The file.
        max_bytes: The most bytes accepted.

    Returns:
        The file's bytes.

    Raises:
        FileRefusedError: Not a regular file, unreadable, or larger than ``max_bytes``.
    """
    check_regular_file(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise FileRefusedError(f"{path} {_os_problem(err)}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefusedError(f"{path} is {describe_kind(info.st_mode)}, not a regular file")
        if info.st_size > max_bytes:
            raise FileRefusedError(
                f"{path} is {info.st_size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.1f} MB"
            )
        chunks, size = [], 0
        while True:
            try:
                block = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            except OSError as err:
                raise FileRefusedError(f"{path} {_os_problem(err)}") from None
            if not block:
                break
            size += len(block)
            if size > max_bytes:
                raise FileRefusedError(
                    f"{path} holds more than {max_bytes / 2**20:.1f} MB, the limit"
                )
            chunks.append(block)
        return b"".join(chunks)
    finally:
        os.close(fd)


def local_roots() -> list[Path]:
    """The folders listed in ``IMGSIM_LOCAL_ROOTS`` (resolved); empty when it is unset."""
    text = os.environ.get(LOCAL_ROOTS_ENV, "")
    return [Path(p).expanduser().resolve() for p in text.split(os.pathsep) if p.strip()]


def inside(base: str | os.PathLike, relative: str) -> Path:
    """Joins ``relative`` to ``base`` and checks that the result, symlinks resolved, stays in it.

    Args:
        base: The folder the path must stay in.
        relative: A relative path (``/``-separated) from a CSV or an archive.

    Returns:
        The resolved path.

    Raises:
        PathOutsideError: ``relative`` is absolute, or ``..`` or a symlink takes it outside.
    """
    base = _resolve(Path(base))
    if not relative or relative.startswith(("/", "\\")) or Path(relative).is_absolute() or (
        len(relative) > 1 and relative[1] == ":"
    ):
        raise PathOutsideError("absolute paths are not allowed here; give a path relative to "
                               f"{base}")
    if "\x00" in relative:
        raise PathOutsideError("the path holds a NUL character")
    target = _resolve(base / relative)
    if target != base and base not in target.parents:
        raise PathOutsideError(f"the path leaves {base} (through '..' or a symlink)")
    return target


def _resolve(path: Path) -> Path:
    """``path.resolve()``, with a symlink loop reported as a PathOutsideError."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as err:  # Python 3.11 raises RuntimeError on a loop
        raise PathOutsideError(f"{path} is a symlink loop ({type(err).__name__})") from None


def under_local_roots(path: str | os.PathLike) -> bool:
    """Whether ``path``, symlinks resolved, lies under one of :func:`local_roots`."""
    try:
        target = _resolve(Path(path).expanduser())
    except PathOutsideError:
        return False
    return any(target == root or root in target.parents for root in local_roots())


def check_local_path(path: str | os.PathLike) -> Path:
    """Checks that an absolute path (or ``file://`` target) is under ``IMGSIM_LOCAL_ROOTS``.

    Args:
        path: An absolute path.

    Returns:
        The resolved path.

    Raises:
        PathOutsideError: It is not under any listed root (or none are listed); the message
            names the variable.
    """
    target = _resolve(Path(path).expanduser())
    if not under_local_roots(target):
        roots = local_roots()
        where = (f"under {os.pathsep.join(map(str, roots))}" if roots
                 else f"anywhere, since {LOCAL_ROOTS_ENV} is not set")
        raise PathOutsideError(
            f"local paths are only read under the folders listed in {LOCAL_ROOTS_ENV}; "
            f"this one is not {where}"
        )
    return target


def private_urls_allowed() -> bool:
    """Whether the operator set ``IMGSIM_ALLOW_PRIVATE_URLS=1``."""
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes")


def address_problem(ip: str) -> str | None:
    """Why an IP address must not be contacted (``"loopback"``, ``"private"``, ...), or None.

    IPv4-mapped and 6to4/Teredo-wrapped IPv6 addresses are judged by the IPv4 address they carry.
    """
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address):
        wrapped = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if wrapped is not None:
            address = wrapped
    for name in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    if not address.is_global:
        return "not globally routable"
    return None


def resolve_public(host: str, port: int) -> list[tuple[int, str]]:
    """Resolves ``host`` and returns the addresses imgsim may connect to.

    Every address DNS gives must be public; one private answer refuses the host (a name that
    resolves to both is a rebinding attempt or a misconfiguration either way).

    Args:
        host: A host name or IP literal.
        port: The port, for ``getaddrinfo``.

    Returns:
        ``(family, ip)`` pairs in DNS order.

    Raises:
        AddressRefusedError: An address is private, loopback, link-local, multicast or
            reserved and ``IMGSIM_ALLOW_PRIVATE_URLS`` is not ``1``; or the name does not resolve.
    """
    host = host.strip("[]")
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise AddressRefusedError(f"the host {host!r} cannot be resolved ({err})") from None
    pairs: list[tuple[int, str]] = []
    for family, _type, _proto, _name, sockaddr in answers:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = str(sockaddr[0])
        if (family, ip) not in pairs:
            pairs.append((family, ip))
    if not pairs:
        raise AddressRefusedError(f"the host {host!r} has no IP address")
    if not private_urls_allowed():
        for _family, ip in pairs:
            problem = address_problem(ip)
            if problem is not None:
                raise AddressRefusedError(
                    f"the host {host!r} resolves to {ip}, a {problem} address; imgsim only "
                    f"downloads from public addresses unless {ALLOW_PRIVATE_ENV}=1 is set"
                )
    return pairs
