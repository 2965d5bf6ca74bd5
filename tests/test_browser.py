"""One real browser: Debian's Chromium driven by Playwright against `streamlit run`."""

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import REPO, hostile_names, jpeg_bytes, solid

CHROMIUM = Path(os.environ.get("IMGSIM_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def serve_module():
    """scripts/serve.py, the launcher start.sh uses (the shop's models load before any visit)."""
    spec = importlib.util.spec_from_file_location("serve", REPO / "scripts" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(hostile_catalog, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    # IMGSIM_BROWSER_DATA_DIR points the test at real catalogues (the README's timings use the demo).
    data = os.environ.get("IMGSIM_BROWSER_DATA_DIR")
    if data is None:
        data = tmp_path_factory.mktemp("appdata")
        shutil.copytree(hostile_catalog, data / "catalogs" / "shop")
    port = free_port()
    env = {**os.environ, "IMGSIM_DATA_DIR": str(data)}
    started = time.perf_counter()
    proc = subprocess.Popen(serve_module().local_command(port), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                break
        except OSError:
            time.sleep(0.2)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail("streamlit did not become healthy")
    healthy = time.perf_counter()
    print(f"\nstart (models loaded) to health: {healthy - started:.1f} s")
    yield url, healthy
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


def wait_idle(page) -> None:
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000)


def count_results(page, k: int) -> None:
    page.wait_for_function(
        f"document.querySelectorAll(\"[data-testid='stImage'] img\").length >= {k + 1}", timeout=120_000)


def test_upload_compare_and_camera(server, browser, tmp_path):
    url, started = server
    ARTIFACTS.mkdir(exist_ok=True)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_bytes(solid((40, 60, 200), 300)))
    page = browser.new_page(viewport={"width": 1280, "height": 2400})
    page.goto(url)
    page.wait_for_selector("[data-testid='stAppViewContainer']", timeout=120_000)
    wait_idle(page)

    t0 = time.perf_counter()
    with page.expect_file_chooser() as chooser:
        page.click("[data-testid='stFileUploaderDropzone'] button")
    chooser.value.set_files(str(photo))
    count_results(page, 8)  # k = 8 results plus the query as the model sees it
    first = time.perf_counter()
    print(f"\nhealth to first result: {first - started:.1f} s; upload to results: {first - t0:.2f} s")
    wait_idle(page)
    page.screenshot(path=str(ARTIFACTS / "search.png"))
    sizes = page.evaluate("""[...document.querySelectorAll(".st-key-results-search [data-testid='stImage'] img")]
        .map(i => { const b = i.getBoundingClientRect(); return [Math.round(b.width), Math.round(b.height)]; })""")
    assert len(sizes) == 8 and len({tuple(s) for s in sizes}) == 1 and sizes[0][0] == sizes[0][1]  # same squares
    assert page.locator(".st-key-results-search [data-testid='stImage']").first.bounding_box()["y"] < 900

    page.get_by_role("button", name="Why?").first.click()  # the heat map, in a dialog
    page.locator("[role='dialog'] [data-testid='stImage'] img").wait_for(timeout=60_000)
    page.keyboard.press("Escape")
    wait_idle(page)

    # Warm query: "More like this" on the second result; done when the query caption shows its name.
    second = page.locator("[data-testid='stMarkdownContainer'] p", has=page.get_by_text("2.", exact=True))
    name = second.first.inner_text().splitlines()[0].split(". ", 1)[1].rstrip("…")
    t1 = time.perf_counter()
    page.get_by_role("button", name="More like this").nth(1).click()
    caption = re.compile(re.escape(name[:40]) + ".* as the model sees it")
    page.get_by_text(caption).first.wait_for(timeout=60_000)
    count_results(page, 8)
    print(f"warm query (click to rendered results): {time.perf_counter() - t1:.2f} s")

    # Change pages the way a user does (the navigation link keeps the session): the query is kept.
    page.locator("[data-testid='stSidebarNav'] a", has_text="Compare").click()
    wait_idle(page)
    page.wait_for_selector("text=Autoencoder latent space", timeout=60_000)
    assert page.locator("text=Pretrained CNN (EfficientNet-Lite0)").count() >= 1
    page.get_by_text(caption).first.wait_for(timeout=60_000)  # the same "more like this" query
    page.screenshot(path=str(ARTIFACTS / "compare.png"))

    page.locator("[data-testid='stSidebarNav'] a", has_text="Search").click()
    wait_idle(page)
    page.get_by_text(caption).first.wait_for(timeout=60_000)
    page.get_by_text("Use the camera").click()
    page.wait_for_selector("[data-testid='stCameraInputButton']", timeout=60_000)
    page.wait_for_timeout(1500)  # let the fake device deliver frames
    page.click("[data-testid='stCameraInputButton']")
    count_results(page, 8)
    wait_idle(page)
    page.screenshot(path=str(ARTIFACTS / "camera.png"))
    assert page.locator("text=Traceback").count() == 0
    page.close()


PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def tiles_in_first_screen(page, grid: str) -> int:
    """How many result tiles of ``grid`` show their picture, name and score in the first screen."""
    return page.evaluate("""([grid, height]) => {
        const tiles = document.querySelectorAll(`.st-key-results-${grid} [data-testid='stImage']`);
        return [...tiles].filter(img => {
            const tile = img.closest("[data-testid='stColumn']");
            const score = tile.querySelector("[data-testid='stCaptionContainer']").getBoundingClientRect();
            const i = img.getBoundingClientRect();
            return i.width > 100 && i.top >= 0 && score.bottom <= height;
        }).length;
    }""", [grid, 844])


def test_phone_first_screen_and_the_box_by_tap(server, browser, tmp_path):
    """390x844 with touch: two result tiles in the first screen after an upload; the box
    editor's buttons work by tap; nothing is wider than the phone."""
    url, _ = server
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_bytes(solid((200, 60, 40), 300)))
    context = browser.new_context(**PHONE)
    page = context.new_page()
    page.goto(url)
    wait_idle(page)
    page.set_input_files("[data-testid='stFileUploaderDropzoneInput']", str(photo))
    count_results(page, 8)
    wait_idle(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "phone.png"))
    assert tiles_in_first_screen(page, "search") >= 2
    assert page.evaluate("document.documentElement.scrollWidth") <= 400  # nothing wider than a phone

    before = page.locator(".st-key-results-search [data-testid='stCaptionContainer']").all_inner_texts()
    page.get_by_text("Adjust the product box").tap()
    page.frame_locator("iframe[title*='streamlit_cropper']").locator("canvas").last.wait_for(timeout=60_000)
    wait_idle(page)
    assert page.get_by_text("searched with your box").count() == 0  # opening it changed nothing
    assert page.locator(".st-key-results-search [data-testid='stCaptionContainer']").all_inner_texts() == before
    page.get_by_role("button", name="Search this box").tap()
    page.get_by_text("searched with your box").first.wait_for(timeout=60_000)
    wait_idle(page)
    page.get_by_role("button", name="Whole photo").tap()
    page.get_by_text("searched with the whole photo").first.wait_for(timeout=60_000)
    wait_idle(page)
    count_results(page, 8)
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    assert page.locator("text=Traceback").count() == 0
    page.screenshot(path=str(ARTIFACTS / "phone-crop.png"))

    # Compare on a phone: a tab per approach, shared results marked, two tiles to a row.
    page.goto(url + "/compare")
    wait_idle(page)
    page.get_by_role("button", name="Try an example").tap()
    page.get_by_role("tab").nth(1).wait_for(timeout=60_000)
    wait_idle(page)
    tabs = page.get_by_role("tab")
    assert tabs.count() == 2
    tabs.nth(1).tap()
    wait_idle(page)
    visible = page.locator("[class*='st-key-results-compare-'] [data-testid='stImage']:visible")
    assert visible.count() == 8
    boxes = [visible.nth(i).bounding_box() for i in range(2)]
    assert boxes[0]["y"] == boxes[1]["y"] and boxes[1]["x"] > boxes[0]["x"] + boxes[0]["width"] - 1  # side by side
    assert page.get_by_text("● shared").count() >= 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    page.screenshot(path=str(ARTIFACTS / "phone-compare.png"))
    context.close()


def as_shown(text: str) -> re.Pattern:
    """What the page shows for catalogue ``text``: itself, a word joiner after each ``:`` of a URL."""
    return re.compile(re.escape(text).replace("://", ":\u2060?//"))


def test_no_request_leaves_the_origin(server, browser, tracker, tmp_path):
    """Every page, with names that are Markdown images and links to the tracker: the browser asks
    the app's own origin for everything (icons, fonts, scripts) and the tracker gets nothing."""
    url, _ = server
    base, hits = tracker
    origin = urlsplit(url).netloc
    ARTIFACTS.mkdir(exist_ok=True)
    photo = tmp_path / "red.jpg"
    photo.write_bytes(jpeg_bytes(solid((210, 30, 30), 300)))
    page = browser.new_page(viewport={"width": 1280, "height": 2400})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url)
    wait_idle(page)
    page.locator("[data-testid='stSlider'] input[aria-label='Results (k)']").focus()
    page.keyboard.press("End")  # k = 100: every item of the shop is a result
    wait_idle(page)
    page.set_input_files("[data-testid='stFileUploaderDropzoneInput']", str(photo))
    count_results(page, 12)
    wait_idle(page)
    names = hostile_names(base)
    page.get_by_text(as_shown(names["reds/red_0.png"])).first.wait_for(timeout=60_000)  # as its characters
    page.get_by_text(as_shown(names["greens/green_0.png"][:30])).first.wait_for(timeout=60_000)  # cut on its card
    card = page.locator("[data-testid='stColumn']", has=page.get_by_text(as_shown(names["reds/red_0.png"])))
    card.get_by_role("button", name="More like this").last.click()
    page.get_by_text(as_shown(names["reds/red_0.png"] + " — as the model sees it")).wait_for(timeout=60_000)
    for title in ("Compare", "Reconstructions", "Catalogue", "Evaluation", "Search"):
        page.locator("[data-testid='stSidebarNav'] a", has_text=title).click()
        wait_idle(page)
        page.wait_for_timeout(1000)  # let images, charts and fonts load
        assert page.locator("text=Traceback").count() == 0, title
    page.get_by_text("Catalogue", exact=True).first.wait_for()  # the sidebar is still there
    page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']", has_text="Category").click()  # its options
    page.get_by_text(f"![c]({base}/c.png) reds").first.wait_for(timeout=60_000)  # an option: no Markdown
    assert page.locator("[data-testid='stMain'] a[href^='http']").count() == 0  # no name became a link
    page.keyboard.press("Escape")
    page.screenshot(path=str(ARTIFACTS / "hostile-names.png"))
    page.close()
    allowed = {"data", "blob", "about"}
    leaving = [u for u in requests if urlsplit(u).scheme not in allowed and urlsplit(u).netloc != origin]
    assert requests and leaving == []
    assert hits == []


def test_a_catalogue_built_here_is_listed_at_once_and_its_key_works_after_a_reload(server, browser, tmp_path):
    """The merchandiser's round trip in a real browser: build from a zip, see it picked in the
    sidebar at once, add a photo and remove an item with the counts right after each, then open
    it again in fresh sessions: with the key's link it can be changed,
    without a key (or with a wrong one) it stays read-only. Named to sort after the shop, so the
    other tests' sessions still open the shop by default."""
    import zipfile

    url, _ = server
    archive = tmp_path / "zz-browser.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, colour in (("hats/red.jpg", (200, 30, 30)), ("hats/blue.jpg", (30, 30, 200))):
            zf.writestr(name, jpeg_bytes(solid(colour, 64)))
    page = browser.new_page(viewport={"width": 1280, "height": 2000})
    page.goto(url + "/catalogue")
    wait_idle(page)
    page.set_input_files("[data-testid='stFileUploaderDropzoneInput']", str(archive))
    page.get_by_label("Catalogue name").fill("zz-browser")
    page.get_by_role("button", name="Build").click()
    page.get_by_text("is ready: 2 items in").wait_for(timeout=120_000)
    wait_idle(page)
    sidebar = page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']", has_text="Catalogue")
    page.screenshot(path=str(ARTIFACTS / "catalogue-built.png"))
    assert "zz-browser" in sidebar.inner_html()  # listed and picked in the same run, no other page opened
    key = page.locator("[data-testid='stCode']").inner_text().strip()
    assert len(key) >= 20
    assert page.get_by_text("Change zz-browser").count() == 1  # its builder may change it
    extra = tmp_path / "green.jpg"
    extra.write_bytes(jpeg_bytes(solid((30, 200, 30), 64)))
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(extra))  # Add's
    page.get_by_role("button", name="Add", exact=True).click()
    page.get_by_text("3 of 3 items imported").wait_for(timeout=120_000)  # the header counts the new item
    wait_idle(page)
    page.locator("[data-testid='stMultiSelect']", has_text="Items to remove").click()
    page.get_by_role("option").first.click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Remove", exact=True).click()
    page.get_by_text("2 of 2 items imported").wait_for(timeout=120_000)  # and the removal, at once
    page.close()

    with_key = browser.new_page()  # a reload, or another browser: a new session
    with_key.goto(f"{url}/catalogue?catalog=zz-browser&key={key}")
    wait_idle(with_key)
    with_key.get_by_text("Change zz-browser").wait_for(timeout=60_000)
    with_key.close()

    without = browser.new_page()  # another visitor, who picks it in the sidebar: listed for everyone
    without.goto(f"{url}/catalogue")
    wait_idle(without)
    without.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']", has_text="Catalogue").click()
    without.get_by_role("option", name="zz-browser").click()
    wait_idle(without)
    without.get_by_text("Edit key of zz-browser").wait_for(timeout=60_000)
    assert without.get_by_text("Change zz-browser").count() == 0
    without.get_by_label("Edit key of zz-browser").fill("not-the-key")
    without.get_by_role("button", name="Unlock").click()
    without.get_by_text("That key does not open").wait_for(timeout=60_000)
    assert without.get_by_text("Change zz-browser").count() == 0
    without.close()
