"""Makes the README's screenshots (phone and desktop) from the real app, into docs/.

Starts the app with ``scripts/serve.py`` on a free local port over the catalogues of
``--data-dir`` (default: ``$IMGSIM_DATA_DIR``, else imgsim's data directory), drives Debian's
Chromium with Playwright (a 390x844 touch phone and a 1280x1200 desktop), tries an example on the
Search and Compare pages and writes one PNG per view. Only 127.0.0.1 is contacted.

Usage: python scripts/screenshots.py [--data-dir DIR] [--out docs] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from serve import local_command  # this script's folder is first on sys.path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 1}
DESKTOP = {"viewport": {"width": 1280, "height": 1200}}
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def start_app(data_dir: str | None) -> tuple[subprocess.Popen, str]:
    """Starts the app in its own process group; returns it and its URL once healthy."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **({"IMGSIM_DATA_DIR": data_dir} if data_dir else {})}
    proc = subprocess.Popen(local_command(port), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit("the app did not become healthy")


def settle(page) -> None:
    """Waits for the script run to end and every image to be decoded."""
    page.wait_for_selector(IDLE, timeout=180_000)
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
    page.wait_for_timeout(800)  # charts and fonts


def shrink(path: Path) -> None:
    """Rewrites the PNG at ``path`` with a 256-colour palette (README images stay under ~200 KB)."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def shoot(browser, url: str, device: dict, name: str, out: Path) -> list[Path]:
    """Search and Compare with an example query on one device; returns the PNGs written."""
    context = browser.new_context(**device)
    page = context.new_page()
    written = []
    for path, title in (("", "search"), ("/compare", "compare")):
        t0 = time.perf_counter()
        page.goto(url + path)
        settle(page)
        print(f"{name} {title}: page ready {time.perf_counter() - t0:.1f} s after the request")
        page.get_by_role("button", name="Try an example").click()
        page.wait_for_selector("[class*='st-key-results-'] [data-testid='stImage']", timeout=180_000)
        settle(page)
        target = out / f"{name}-{title}.png"
        page.screenshot(path=str(target))
        shrink(target)
        written.append(target)
    context.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("IMGSIM_DATA_DIR"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    proc, url = start_app(args.data_dir)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=ARGS)
            written = shoot(browser, url, PHONE, "phone", args.out) + shoot(browser, url, DESKTOP, "desktop", args.out)
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    for path in written:
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
