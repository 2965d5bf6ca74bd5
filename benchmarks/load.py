"""Load: many browser sessions searching at once against one ``streamlit run`` on 127.0.0.1.

Starts the app (its own process group, stopped at the end) on a catalogue, opens ``--sessions``
browser contexts in Debian's Chromium (each is its own Streamlit session), and in each round
every session uploads a different photo on the Search page at the same moment. Per session it
measures the time from the upload to all ``k`` result thumbnails (plus the query as the model
sees it) decoded in the page. Before each round every page is reloaded (a fresh session with no
results on screen), which is not timed. A single-session baseline runs first.

The photos are made here: a catalogue thumbnail placed on a textured background, saved as a
``--photo-mp`` megapixel JPEG, one per session and round, all 4:3 like a phone's.

Also reported per round: the load average, and the CPU seconds spent by the app and by the
browser (both share the machine's cores, so a browser-heavy round slows the app too).

    IMGSIM_DATA_DIR=/tmp/load-data .venv/bin/python benchmarks/load.py \
        [--sessions 16] [--rounds 3] [--browser-nice 19] [--app-root /tmp/load-wt] [--json /tmp/load.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("IMGSIM_CHROMIUM", "/usr/bin/chromium"))
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
UPLOAD = "[data-testid='stFileUploaderDropzoneInput']"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Screenshots of sessions that timed out.
SHOTS = Path(tempfile.gettempdir()) / "imgsim-load-timeouts"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_photos(data_dir: Path, count: int, megapixels: float, seed: int, out: Path) -> list[Path]:
    """``count`` distinct 4:3 JPEGs of about ``megapixels`` MP: a catalogue thumbnail on a scene.

    Args:
        data_dir: ``IMGSIM_DATA_DIR``; thumbnails are taken from its catalogues.
        count: How many photos.
        megapixels: Size of each photo.
        seed: Random seed (which thumbnails, where, what background).
        out: Folder to write them to.

    Returns:
        The paths, ``photo-000.jpg`` ...
    """
    thumbs = sorted(data_dir.glob("catalogs/*/thumbs/*.jpg"))
    if not thumbs:
        raise SystemExit(f"no thumbnails under {data_dir}/catalogs/*/thumbs: build a catalogue first")
    rng = np.random.default_rng(seed)
    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = w * 3 // 4
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        # A smooth two-colour gradient with sensor-like noise: a plausible, well-compressing scene.
        a, b = rng.integers(60, 230, (2, 3))
        t = np.linspace(0, 1, h)[:, None, None]
        scene = (a * (1 - t) + b * t + rng.normal(0, 6, (h, w, 3))).clip(0, 255).astype(np.uint8)
        photo = Image.fromarray(scene)
        thumb = Image.open(thumbs[int(rng.integers(len(thumbs)))]).convert("RGB")
        side = int(min(w, h) * rng.uniform(0.45, 0.8))
        thumb.thumbnail((side, side), Image.Resampling.BICUBIC, reducing_gap=None)
        thumb = thumb.resize((side * thumb.width // max(thumb.size), side * thumb.height // max(thumb.size)))
        photo.paste(thumb, (int(rng.integers(0, w - thumb.width)), int(rng.integers(0, h - thumb.height))))
        path = out / f"photo-{i:03d}.jpg"
        buf = io.BytesIO()
        photo.save(buf, "JPEG", quality=88)
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def start_app(app_root: Path, data_dir: Path, port: int, python: str) -> subprocess.Popen:
    """``streamlit run`` in its own process group on 127.0.0.1; returns once it is healthy."""
    env = {**os.environ, "IMGSIM_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen(
        [python, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=app_root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"streamlit exited with {proc.returncode}")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.2)
    stop_app(proc)
    raise SystemExit("streamlit did not become healthy in 2 minutes")


def stop_app(proc: subprocess.Popen) -> None:
    """Stops the app's process group (SIGTERM, then SIGKILL after 20 s)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


def _tree_cpu(root: int) -> float:
    """CPU seconds (user + system, children waited for included) of ``root`` and its descendants."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0))[1]
        todo += children.get(pid, [])
    return total / CLK_TCK


def cpu_split(app_pid: int) -> tuple[float, float]:
    """CPU seconds so far of the app and of everything else this script started (the browser)."""
    app = _tree_cpu(app_pid)
    return app, _tree_cpu(os.getpid()) - app


def renice_browser(app_pid: int, niceness: int) -> None:
    """Lowers the priority of every process this script started except the app (the browser).

    On a shared machine the browser's 16 renderers otherwise take most of the CPU from the app;
    with them niced, the numbers are closer to a server whose shoppers' browsers run elsewhere.
    """
    if niceness <= 0:
        return
    app = {app_pid}
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                procs[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    changed = True
    while changed:  # the app's descendants
        before = len(app)
        app |= {pid for pid, ppid in procs.items() if ppid in app}
        changed = len(app) != before
    mine, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        for child in (c for c, ppid in procs.items() if ppid == pid and c not in app):
            mine.add(child)
            todo.append(child)
    for pid in mine:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
        except OSError:
            pass


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


#: With --lean-browser: no CSS animations or transitions (Streamlit's "running" animations
#: repaint every page for as long as the server works, which costs the shared cores).
LEAN_CSS = "*, *::before, *::after { animation: none !important; transition: none !important; }"


async def fresh(page, url: str, timeout_ms: int, lean: bool = False) -> None:
    """Loads the app in ``page`` (a new Streamlit session) and waits until its script is idle."""
    await page.goto(url)
    if lean:
        await page.add_style_tag(content=LEAN_CSS)
    await page.wait_for_selector(UPLOAD, state="attached", timeout=timeout_ms)
    await page.wait_for_selector(IDLE, timeout=timeout_ms)


async def one_search(page, photo: Path, k: int, timeout_ms: int, shots: Path | None = None) -> dict:
    """Uploads ``photo``; seconds until the query and ``k`` result images are all decoded.

    A session that times out is recorded with ``seconds`` = the timeout and ``failed`` = True
    (and a screenshot in ``shots``), so one stuck page does not lose the round.
    """
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    t0 = time.perf_counter()
    await page.set_input_files(UPLOAD, str(photo))
    try:
        await page.wait_for_function(
        """([k, name]) => {
             const imgs = [...document.querySelectorAll("[data-testid='stImage'] img")];
             return imgs.length >= k + 1 && imgs.every(i => i.complete && i.naturalWidth > 0)
                    && document.body.innerText.includes(name + " — ");  // the query's caption
           }""", arg=[k, photo.name], timeout=timeout_ms, polling=50)
    except PlaywrightTimeout:
        if shots is not None:
            shots.mkdir(exist_ok=True)
            await page.screenshot(path=str(shots / f"timeout-{photo.stem}.png"))
        return {"seconds": time.perf_counter() - t0, "caption": "", "failed": True}
    seconds = time.perf_counter() - t0
    # The Search page's caption "<approach> · N ms (search M ms)": the engine's own time.
    captions = await page.get_by_text("(search ").all_inner_texts()
    return {"seconds": seconds, "caption": captions[0].strip() if captions else "", "failed": False}


def summary(seconds: list[float]) -> dict[str, float]:
    """p50, p95 (nearest rank) and max of ``seconds``."""
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(np.ceil(0.95 * len(ordered))) - 1)]
    return {"n": len(ordered), "p50": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


async def run_rounds(browser, url: str, sessions: int, rounds: int, photos: list[Path], k: int,
                     app_pid: int, timeout_ms: int, label: str, browser_nice: int = 0,
                     lean: bool = False) -> dict:
    """``rounds`` rounds of ``sessions`` simultaneous uploads; per-session times and a summary."""
    contexts = [await browser.new_context(viewport={"width": 1280, "height": 2000},
                                          reduced_motion="reduce" if lean else "no-preference")
                for _ in range(sessions)]
    pages = [await c.new_page() for c in contexts]
    times, rows = [], []
    try:
        for r in range(rounds):
            for i in range(0, sessions, 4):  # reload a few at a time: 16 cold page loads at once thrash
                await asyncio.gather(*(fresh(p, url, timeout_ms, lean) for p in pages[i:i + 4]))
            renice_browser(app_pid, browser_nice)
            load_before, (app0, browser0) = loadavg(), cpu_split(app_pid)
            t0 = time.perf_counter()
            got = await asyncio.gather(*(one_search(p, photos[(r * sessions + i) % len(photos)], k, timeout_ms, SHOTS)
                                         for i, p in enumerate(pages)))
            wall = time.perf_counter() - t0
            app1, browser1 = cpu_split(app_pid)
            secs = [g["seconds"] for g in got]
            times += secs
            row = {"label": label, "round": r + 1, **summary(secs), "wall": wall, "app_cpu_s": app1 - app0,
                   "browser_cpu_s": browser1 - browser0, "failed": sum(g["failed"] for g in got), "loadavg_before": load_before, "loadavg_after": loadavg(),
                   "captions": [g["caption"] for g in got]}
            rows.append(row)
            print(f"{label} round {r + 1}: p50 {row['p50']:.2f} s  p95 {row['p95']:.2f} s  max {row['max']:.2f} s  "
                  f"(wall {wall:.1f} s, app CPU {row['app_cpu_s']:.1f} s, browser CPU {row['browser_cpu_s']:.1f} s, "
                  f"load {load_before} -> {row['loadavg_after']}, {row['failed']} timed out)  e.g. {got[0]['caption']!r}", flush=True)
    finally:
        for c in contexts:
            await c.close()
    return {"label": label, "sessions": sessions, **summary(times), "failed": sum(r["failed"] for r in rows),
            "rounds": rows}


async def main_async(args: argparse.Namespace) -> dict:
    from playwright.async_api import async_playwright

    data_dir = Path(args.data_dir or os.environ.get("IMGSIM_DATA_DIR", "")).resolve()
    if not (data_dir / "catalogs").is_dir():
        raise SystemExit("give --data-dir (or IMGSIM_DATA_DIR) holding catalogs/<name>")
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    timeout_ms = int(args.timeout * 1000)
    with tempfile.TemporaryDirectory(prefix="imgsim-load-") as tmp:
        photos = make_photos(data_dir, args.sessions * args.rounds + args.baseline_rounds, args.photo_mp,
                             args.seed, Path(tmp))
        port = free_port()
        started = time.perf_counter()
        app = start_app(Path(args.app_root).resolve(), data_dir, port, args.python)
        url = f"http://127.0.0.1:{port}"
        try:
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS)
                try:
                    # The first page load builds the engine and warms its models; not timed as a search.
                    warm = await browser.new_page()
                    await fresh(warm, url, timeout_ms)
                    await warm.close()
                    print(f"app ready in {time.perf_counter() - started:.1f} s (load {loadavg()})", flush=True)
                    results = {}
                    if args.baseline_rounds:
                        results["single"] = await run_rounds(browser, url, 1, args.baseline_rounds,
                                                             photos[-args.baseline_rounds:], args.k, app.pid,
                                                             timeout_ms, "single", args.browser_nice,
                                                             args.lean_browser)
                    results["concurrent"] = await run_rounds(browser, url, args.sessions, args.rounds, photos,
                                                             args.k, app.pid, timeout_ms, f"{args.sessions} sessions",
                                                             args.browser_nice, args.lean_browser)
                finally:
                    await browser.close()
        finally:
            stop_app(app)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="IMGSIM_DATA_DIR for the app (default: the environment's)")
    parser.add_argument("--app-root", default=str(REPO), help="folder holding streamlit_app.py (e.g. a worktree)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs streamlit")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-rounds", type=int, default=3, help="single-session rounds first (0: none)")
    parser.add_argument("--k", type=int, default=8, help="the app's default k (the sidebar is left alone)")
    parser.add_argument("--photo-mp", type=float, default=2.0, help="megapixels of each uploaded JPEG")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds before one wait gives up")
    parser.add_argument("--browser-nice", type=int, default=0,
                        help="run the browser at this niceness (e.g. 19) so the app gets the CPU first")
    parser.add_argument("--lean-browser", action="store_true",
                        help="reduced motion and no CSS animations in the pages (less browser CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.sessions < 1 or args.rounds < 1 or args.baseline_rounds < 0:
        parser.error("--sessions and --rounds must be >= 1, --baseline-rounds >= 0")
    results = asyncio.run(main_async(args))
    print("\n| run | searches | timed out | p50 s | p95 s | max s |\n|---|---|---|---|---|---|")
    for r in results.values():
        print(f"| {r['label']} | {r['n']} | {r['failed']} | {r['p50']:.2f} | {r['p95']:.2f} | {r['max']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
