"""Every page through streamlit's AppTest, over one tiny catalogue with hostile names.

The catalogue is built once per session and copied once per module; every test opens the same
path, so the process-wide engine cache loads its models once for all of them.
"""

import re
import shutil

import numpy as np
import pytest
from conftest import REPO, jpeg_bytes, solid
from streamlit.testing.v1 import AppTest

APP = str(REPO / "streamlit_app.py")
PAGES = ["app_pages/compare.py", "app_pages/reconstructions.py", "app_pages/catalogue.py",
         "app_pages/evaluation.py", "app_pages/duplicates.py"]
#: Markdown that would render: an image or a link, raw HTML, bold or LaTeX around catalogue text.
UNESCAPED = re.compile(r"(?<!\\)(!\[|\]\(|<img|\*\*bold|\$x)")


@pytest.fixture(scope="module")
def app_data(hostile_catalog, tmp_path_factory):
    data = tmp_path_factory.mktemp("appdata")
    shutil.copytree(hostile_catalog, data / "catalogs" / "shop")
    return data


@pytest.fixture
def app(app_data, monkeypatch):
    monkeypatch.setenv("IMGSIM_DATA_DIR", str(app_data))
    yield AppTest.from_file(APP, default_timeout=120).run()
    for extra in (app_data / "catalogs").iterdir():  # what a test built or copied beside the shop
        if extra.name != "shop":
            shutil.rmtree(extra)
    shutil.rmtree(app_data / "uploads", ignore_errors=True)


def shown_text(at) -> list[str]:
    """The Markdown source of every element that renders Markdown, sidebar included."""
    elements = [*at.markdown, *at.caption, *at.error, *at.info, *at.success, *at.warning,
                *at.subheader, *at.title]
    return [e.value for e in elements] + [c for img in at.image for c in img.captions]


def assert_plain(at) -> list[str]:
    """Asserts no catalogue text renders as Markdown; returns what was shown."""
    assert not at.exception, at.exception
    shown = shown_text(at)
    for value in shown:
        assert not UNESCAPED.search(value), value
    return shown


def result_images(at):
    return [img for img in at.image if not "".join(img.captions).strip()]  # the query has a caption


def test_search_page_upload_approach_and_k(app):
    assert not app.exception
    assert app.sidebar.selectbox[0].value == "shop"
    app.file_uploader[0].set_value(("photo.jpg", jpeg_bytes(solid((30, 50, 210), 64)), "image/jpeg")).run()
    assert not app.exception
    assert len(result_images(app)) == 8  # the default k
    app.sidebar.slider(key="k-picker").set_value(3).run()
    assert len(result_images(app)) == 3
    app.sidebar.radio(key="approach-picker").set_value("autoencoder").run()
    assert not app.exception and len(result_images(app)) == 3


def test_bad_upload_shows_an_error_and_the_page_goes_on(app):
    app.file_uploader[0].set_value(("page.jpg", b"<html>nope</html>", "image/jpeg")).run()
    assert not app.exception
    assert any("HTML page" in e.value for e in app.error)
    app.file_uploader[0].set_value(("ok.jpg", jpeg_bytes(solid((210, 30, 30), 64)), "image/jpeg")).run()
    assert not app.error and len(result_images(app)) == 8


def test_example_and_more_like_this(app):
    app.button(key="example-search").click().run()
    assert not app.exception and len(result_images(app)) == 8
    more = [b for b in app.button if b.label == "More like this"]
    more[0].click().run()
    assert not app.exception and len(result_images(app)) == 8


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(app, page):
    app.switch_page(page).run()
    assert not app.exception, app.exception


def test_the_query_and_options_survive_a_page_change(app):
    """Upload on Search, open Compare: the same photo is searched there, with the same k."""
    app.sidebar.slider(key="k-picker").set_value(3).run()
    app.file_uploader[0].set_value(("photo.jpg", jpeg_bytes(solid((30, 50, 210), 64)), "image/jpeg")).run()
    top_search = [c for img in result_images(app) for c in img.captions]
    app.switch_page("app_pages/compare.py").run()
    assert not app.exception
    assert app.sidebar.slider(key="k-picker").value == 3
    assert len(result_images(app)) == 3 * 2  # both approaches, k each
    assert any("photo\\.jpg" in c for img in app.image for c in img.captions)  # the name, as plain text
    app.switch_page("app_pages/search.py").run()
    assert [c for img in result_images(app) for c in img.captions] == top_search


def test_switching_catalogue_drops_what_belonged_to_the_old_one(app, app_data):
    shutil.copytree(app_data / "catalogs" / "shop", app_data / "catalogs" / "other")
    app.run()
    app.button(key="example-search").click().run()
    assert app.session_state["query"].kind == "item" and len(result_images(app)) == 8
    app.switch_page("app_pages/reconstructions.py").run()
    app.main.radio[0].set_value("Random").run()
    assert not app.exception, app.exception
    app.sidebar.selectbox[0].set_value("other").run()
    assert not app.exception
    assert "query" not in app.session_state and len(app.image) >= 3


def result_scores(at) -> list[str]:
    return [c.value for c in at.caption if "similarity" in c.value]


def test_the_box_changes_nothing_until_applied_and_whole_photo_means_all_of_it(app):
    """Opening the editor keeps the search; "Search this box" applies the box shown (the
    automatic one until it is moved); "Whole photo" searches all of the photo, not the automatic box."""
    from conftest import jpeg_bytes as jpeg

    scene = np.full((300, 400, 3), 90, np.uint8)
    scene[100:200, 150:250] = (30, 50, 210)
    app.file_uploader[0].set_value(("scene.jpg", jpeg(scene), "image/jpeg")).run()
    assert not app.exception and len(result_images(app)) == 8
    before = result_scores(app)
    app.toggle(key="crop-search").set_value(True).run()
    assert not app.exception and app.session_state["query"].box is None and result_scores(app) == before
    app.button(key="apply-box-search").click().run()
    box = app.session_state["query"].box
    assert box is not None and 0 <= box[0] < box[2] <= 400 and 0 <= box[1] < box[3] <= 300 and box != (0, 0, 400, 300)
    assert any("searched with your box" in c.value for c in app.caption)
    app.switch_page("app_pages/compare.py").run()  # the box travels with the query
    assert not app.exception and app.session_state["query"].box == box
    app.switch_page("app_pages/search.py").run()
    app.toggle(key="crop-search").set_value(True).run()
    app.button(key="whole-photo-search").click().run()
    assert app.session_state["query"].box == (0, 0, 400, 300)
    assert any("searched with the whole photo" in c.value for c in app.caption)
    app.toggle(key="crop-search").set_value(False).run()
    app.button(key="uncrop-search").click().run()  # back to the automatic box
    assert app.session_state["query"].box is None and result_scores(app) == before
    app.sidebar.toggle(key="regions-picker").set_value(False).run()
    assert not app.exception and len(result_images(app)) == 8


def test_a_bad_upload_replaces_the_previous_results(app):
    app.file_uploader[0].set_value(("photo.jpg", jpeg_bytes(solid((40, 60, 200), 64)), "image/jpeg")).run()
    assert len(result_images(app)) == 8
    app.file_uploader[0].set_value(("notes.jpg", b"<html>not a photo</html>", "image/jpeg")).run()
    assert not app.exception and app.error and "query" not in app.session_state
    assert result_images(app) == [] and not result_scores(app)


def test_tiles_are_white_squares_that_enlarge_a_small_thumbnail_at_most_twice(tmp_path):
    from PIL import Image

    from app_support.widgets import TILE_SIDE, tile

    Image.new("RGB", (32, 20), (200, 0, 0)).save(tmp_path / "small.png")
    Image.new("RGB", (512, 256), (0, 0, 200)).save(tmp_path / "large.png")
    small, large = tile(str(tmp_path / "small.png")), tile(str(tmp_path / "large.png"))
    assert small.shape == large.shape == (TILE_SIDE, TILE_SIDE, 3)
    red = np.argwhere(small[..., 1] < 128)  # not white
    assert red.max(0).tolist() == [127 + 20, 127 + 32] and red.min(0).tolist() == [128 - 20, 128 - 32]
    blue = np.argwhere(large[..., 0] < 128)
    assert blue.min(0).tolist() == [64, 0] and blue.max(0).tolist() == [191, 255]
    assert (small[0, 0] == 255).all() and (large[0, 0] == 255).all()


def test_why_shows_the_heat_map_only_when_asked(app, monkeypatch):
    import imgsim

    calls = []
    real = imgsim.explain
    monkeypatch.setattr(imgsim, "explain", lambda *a, **kw: calls.append(a[2]) or real(*a, **kw))
    app.file_uploader[0].set_value(("photo.jpg", jpeg_bytes(solid((40, 60, 200), 64)), "image/jpeg")).run()
    assert calls == [] and len([b for b in app.button if b.label == "Why?"]) == 8
    [b for b in app.button if b.label == "Why?"][2].click().run()
    assert not app.exception and len(calls) == 1  # that result only, once
    assert any("warm colours" in c for img in app.image for c in img.captions)
    app.run()  # a later run (any click) computes nothing more
    assert len(calls) == 1
    app.button(key="example-search").click().run()  # a catalogue item: its thumbnail is the query
    [b for b in app.button if b.label == "Why?"][0].click().run()
    assert not app.exception and len(calls) == 2 and not app.error
    assert any("warm colours" in c for img in app.image for c in img.captions)


def test_compare_page_shows_a_tab_per_approach_with_shared_results_marked(app):
    app.switch_page("app_pages/compare.py").run()
    app.button(key="example-compare").click().run()
    assert not app.exception
    labels = [t.label for t in app.tabs]  # the hostile shop has no labels: no tuned approach
    assert len(labels) == 2 and labels[0].startswith("Pretrained CNN") and labels[1].startswith("Autoencoder")
    assert any("precision@8" in m.value for m in app.markdown)
    shared = re.search(r"\*\*(\d+) of 8\*\*", " ".join(m.value for m in app.markdown))
    assert shared and sum("● shared" in c.value for c in app.caption) == 2 * int(shared.group(1))
    # each tab and the approach picker's help say what the approach was measured to be good at here
    said = [c.value for c in app.caption if "of the first 10 results have the same label" in c.value]
    assert len(said) == 2
    assert "of the first 10 results have the same label" in app.sidebar.radio[0].help


def test_reconstructions_modes(app):
    app.switch_page("app_pages/reconstructions.py").run()
    for mode in ("Browse", "Random", "Worst"):
        app.main.radio[0].set_value(mode).run()
        assert not app.exception
        assert len(app.image) >= 3


def test_reconstructions_browse_picks_an_item_by_name(app):
    app.switch_page("app_pages/reconstructions.py").run()
    app.main.radio[0].set_value("Browse").run()
    picker = app.main.selectbox(key="recon_item")
    names = [str(o) for o in picker.options]
    assert len(names) > 3 and names[0] != "0"  # options are names, not row numbers
    picker.set_value(3).run()
    assert not app.exception and any(names[3][:10] in m.value.replace("\\", "") for m in app.markdown)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_catalogue_page_imports_an_uploaded_zip(app, shop_dir, app_data, monkeypatch):
    import io
    import zipfile

    from streamlit.delta_generator import DeltaGenerator

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:  # entry names become item names, shown in the progress text
        for i, path in enumerate(sorted(shop_dir.rglob("*.png"))[:6]):
            archive.write(path, f"{path.parent.name}/**bold** ![z](z.png) {i}.png")
    texts: list[str] = []
    progress = DeltaGenerator.progress

    def recording(self, value, *args, **kwargs):
        texts.append(kwargs.get("text") or "")
        return progress(self, value, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "progress", recording)
    app.switch_page("app_pages/catalogue.py").run()
    assert not [t for t in app.text_input if "server" in t.label]  # only where IMGSIM_LOCAL_ROOTS lists folders
    app.file_uploader(key="import-file").set_value(("shop2.zip", buf.getvalue(), "application/zip"))
    name_input(app).set_value("uploaded")
    build_button(app).click().run(timeout=300)
    assert not app.exception and not app.error, (app.exception[0].proto if app.exception else app.error[0].value)
    assert any("uploaded" in s.value and "ready" in s.value for s in app.success)
    assert (app_data / "catalogs" / "uploaded" / "stores" / "pretrained" / "manifest.json").exists()
    assert any("\\*\\*bold\\*\\* \\!\\[z\\]" in t for t in texts), texts
    assert not [t for t in texts if UNESCAPED.search(t)]
    # the session changes its own catalogue: add a photo, remove an item
    app.run()
    assert app.sidebar.selectbox[0].value == "uploaded"
    app.file_uploader(key="add-files").set_value([("new.jpg", jpeg_bytes(solid((200, 200, 30), 64)), "image/jpeg")])
    next(b for b in app.button if b.label == "Add").click().run(timeout=300)
    assert not app.exception and any("1 added" in s.value for s in app.success)
    first = app.multiselect(key="remove-items").options[0]
    app.multiselect(key="remove-items").select(first)
    next(b for b in app.button if b.label == "Remove").click().run(timeout=300)
    assert not app.exception and any("1 removed" in s.value for s in app.success)
    # the session may rebuild its own catalogue, but never the operator's
    app.file_uploader(key="import-file").set_value(("shop2.zip", buf.getvalue(), "application/zip"))
    name_input(app).set_value("shop")
    build_button(app).click().run()
    assert any("already exists" in e.value for e in app.error)
    name_input(app).set_value("../../etc")
    build_button(app).click().run()
    assert any("Choose another name" in e.value for e in app.error)


def name_input(app):
    return next(t for t in app.text_input if t.label == "Catalogue name")


def build_button(app):
    return next(b for b in app.button if b.label == "Build")


def test_catalogue_page_refuses_a_broken_zip(app):
    app.switch_page("app_pages/catalogue.py").run()
    app.file_uploader(key="import-file").set_value(("bad.zip", b"not a zip at all", "application/zip"))
    build_button(app).click().run()
    assert not app.exception
    assert any("zip" in e.value for e in app.error)


def test_pages_use_only_imgsim_public_api():
    import re

    import imgsim

    files = [REPO / "streamlit_app.py", *sorted((REPO / "app_pages").glob("*.py")),
             *sorted((REPO / "app_support").glob("*.py"))]
    assert len(files) >= 11 and not (REPO / "pages").exists()  # Streamlit treats a pages/ folder specially
    for path in files:
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) imgsim\.", text, re.M), f"{path.name} imports below imgsim's facade"
        for name in set(re.findall(r"\bimgsim\.(\w+)", text)):
            assert name in imgsim.__all__, f"{path.name} uses imgsim.{name}, which is not public"


def test_streamlit_does_not_clear_the_shared_keras_session(monkeypatch):
    """Streamlit's per-run Keras clean-up emptied TensorFlow's kernel cache for every session
    (about 85% of the app's CPU per search with 16 sessions, benchmarks/load.py)."""
    import keras
    from streamlit.runtime.scriptrunner import script_runner

    import app_support.engine  # noqa: F401  (installs the hook)

    calls = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: calls.append(1))
    script_runner._clean_problem_modules()
    assert calls == []


# -- catalogue text is shown as text ----------------------------------------------------------

def escaped_url(url: str) -> str:
    """``url`` as the app writes it in Markdown: escaped, a word joiner against autolinks."""
    escaped = url.replace(".", "\\.").replace(":", "\\:").replace("/", "\\/")
    return escaped.replace("\\:\\/\\/", "\\:\u2060\\/\\/")


def card_values(at) -> list[str]:
    return [m.value for m in at.markdown if re.match(r"\*\*\d+\.\*\* ", m.value)]


def test_search_shows_hostile_names_as_text(app, tracker):
    """Names that are Markdown images, links, HTML, bold and LaTeX show as their characters."""
    app.sidebar.slider(key="k-picker").set_value(12).run()
    app.file_uploader[0].set_value(("photo.jpg", jpeg_bytes(solid((210, 30, 30), 64)), "image/jpeg")).run()
    shown = " ".join(assert_plain(app))
    base = escaped_url(tracker[0])
    for escaped in (f"\\!\\[x\\]\\({base}\\/t\\.png\\)", f"\\[link\\]\\({base}\\/l\\) \\<img",
                    "\\*\\*bold\\*\\* \\_it\\_ \\`code\\` \\$x\\^2\\$", f"\\!\\[c\\]\\({base}\\/c\\.png\\) reds",
                    "An important part of Hanukkah is the menorah—a candleholder…"):
        assert escaped in shown
    cards = card_values(app)
    assert len(cards) == 12
    for card in cards:  # the only bold is the rank; no "**" left open before a space
        assert card.replace("\\*", "").count("**") == 2 and not re.search(r"\s\*\*", card.replace("\\*", "")), card
    row = next(i for i, card in enumerate(cards) if "\\!\\[x\\]" in card)
    [b for b in app.button if b.label == "More like this"][row].click().run()
    assert any("\\!\\[x\\]" in c and "as the model sees it" in c for img in app.image for c in img.captions)
    assert_plain(app)
    for page in PAGES:  # the same query on every page
        app.switch_page(page).run()
        shown = assert_plain(app)
        if page.endswith(("compare.py", "reconstructions.py")):
            assert any("\\!\\[x\\]" in v for v in shown), page
    assert tracker[1] == []


def test_build_errors_quoting_the_upload_are_plain(app, tracker):
    csv = f"uniq_id,product_name,image\n![d]({tracker[0]}/d.png),a,a.jpg\n![d]({tracker[0]}/d.png),b,b.jpg\n"
    app.switch_page("app_pages/catalogue.py").run()
    app.file_uploader(key="import-file").set_value(("dupes.csv", csv.encode(), "text/csv"))
    name_input(app).set_value("dupes")
    build_button(app).click().run()
    errors = [e.value for e in app.error]
    assert any("must be unique" in e and "\\!\\[d\\]" in e for e in errors), errors
    assert_plain(app)


def test_a_library_error_shows_as_a_message_not_a_traceback(app, monkeypatch):
    """An ImgsimError no page handles is caught once, by the frame, and shown as plain text."""
    import imgsim

    def broken(*args, **kwargs):
        raise imgsim.ArtifactError("the model ![m](http://127.0.0.1:9/m.png) is damaged")

    monkeypatch.setattr(imgsim.Engine, "reconstruct", broken)
    app.switch_page("app_pages/reconstructions.py").run()
    app.main.radio[0].set_value("Browse").run()
    assert not app.exception
    url = escaped_url("http://127.0.0.1:9/m.png")
    assert [e.value for e in app.error] == [f"the model \\!\\[m\\]\\({url}\\) is damaged"]
    assert app.sidebar.selectbox[0].value == "shop"  # the frame and sidebar are still there


@pytest.mark.parametrize("text", [
    "![x](http://127.0.0.1:1/t.png)", "[link](http://a/b)", "**bold** __b__ *i* _i_", "`code`",
    "<img src=x onerror=alert(1)>", "$x^2$ $$y$$", "# heading", "1. item", "- item", "> quote",
    "a\n\n# b\n---", "&lt;img&gt; &amp;", ":red[red] :material/home:", "| a | b |", "~~s~~", "\\*x\\*",
])
def test_plain_renders_as_the_text_itself(text):
    """Oracle: CommonMark renders plain(text) as one paragraph holding exactly the characters."""
    import html

    markdown_it = pytest.importorskip("markdown_it")
    from app_support.text import plain

    rendered = markdown_it.MarkdownIt("commonmark").render(plain(text)).replace("\u2060", "")
    assert rendered == f"<p>{html.escape(' '.join(text.split()), quote=False)}</p>\n"


@pytest.mark.parametrize("text", ["see http://127.0.0.1:1/t.png", "HTTPS://a.b/c", "www.example.com", "a@b.com"])
def test_plain_leaves_nothing_for_gfm_to_autolink(text):
    """GFM links bare URLs and addresses in text whatever the escapes; a word joiner stops it."""
    from app_support.text import plain

    unescaped = plain(text).replace("\\", "")
    assert unescaped.replace("\u2060", "") == text
    assert not re.search(r"(?i)://|www\.|@\w", unescaped)


def test_shorten_cuts_at_a_word_and_says_so():
    from app_support.text import shorten

    assert shorten("a candleholder **with nine** branches", 20) == "a candleholder…"
    assert shorten("exactly twelve", 20) == "exactly twelve"
    assert shorten("abcdefghijklmnopqrstuvwxyz", 10) == "abcdefghi…"
    with pytest.raises(ValueError, match="Received: limit=1"):
        shorten("x", 1)


# -- the Catalogue page: failed builds, uploads, edit keys (issues 19 items 2, 3, 10; 24 causes 12, 13)

def zip_of(files: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


def build_from(app, file_name: str, data: bytes, name: str):
    app.switch_page("app_pages/catalogue.py").run()
    app.file_uploader(key="import-file").set_value((file_name, data, "application/octet-stream"))
    name_input(app).set_value(name)
    return build_button(app).click().run(timeout=120)


def assert_no_server_path(at, app_data) -> None:
    shown = " ".join(shown_text(at)).replace("\\", "")
    assert str(app_data) not in shown and "uploads/" not in shown and "/catalogs/" not in shown, shown


def uploads_left(app_data) -> list:
    folder = app_data / "uploads"
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_a_failed_build_publishes_nothing_and_its_name_is_reusable(app, app_data):
    """A zip with no decodable image was once listed to everyone and made 'Try an example' raise."""
    build_from(app, "nothing.zip", zip_of({"a.jpg": b"not an image", "b.png": b"nor this"}), "broken")
    assert not app.exception
    errors = [e.value for e in app.error]
    assert len(errors) == 1 and "could be ingested" in errors[0] and "nothing\\.zip" in errors[0], errors
    assert_no_server_path(app, app_data)
    assert not (app_data / "catalogs" / "broken").exists() and uploads_left(app_data) == []
    assert app.sidebar.selectbox[0].options == ["shop"]
    build_from(app, "one.zip", zip_of({"red.jpg": jpeg_bytes(solid((200, 30, 30), 64))}), "broken")
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert app.sidebar.selectbox[0].value == "broken"


def test_an_emptied_catalogue_is_never_listed(app, app_data):
    import imgsim

    copy = app_data / "catalogs" / "emptied"
    shutil.copytree(app_data / "catalogs" / "shop", copy)
    catalog = imgsim.Catalog.load(copy)
    imgsim.remove_items(copy, catalog.items["id"].tolist())
    app.run()
    assert not app.exception and app.sidebar.selectbox[0].options == ["shop"]


def test_too_many_rows_are_refused_in_one_line_without_downloads(app, app_data, http_server):
    import imgsim

    base, counts = http_server
    before = dict(counts)
    n = imgsim.ANONYMOUS_MAX_ITEMS + 1
    csv = "uniq_id,product_name,image\n" + "".join(f"p{i},item {i},{base}/good/{i}.jpg\n" for i in range(n))
    build_from(app, "big.csv", csv.encode(), "big")
    assert not app.exception
    errors = [e.value.replace("\\", "") for e in app.error]
    assert errors == [f"The build stopped: the source lists {n:,} items; at most "
                      f"{imgsim.ANONYMOUS_MAX_ITEMS:,} are accepted from one upload"], errors
    assert counts == before and uploads_left(app_data) == []
    assert not (app_data / "catalogs" / "big").exists()


@pytest.fixture
def solo(app, app_data):
    """A one-photo catalogue built through the page; yields the app, its edit key and the page's texts."""
    build_from(app, "solo.zip", zip_of({"red.jpg": jpeg_bytes(solid((200, 30, 30), 64))}), "solo")
    assert not app.exception and not app.error, [e.value for e in app.error]
    return app, app.code[0].value


def header(at) -> str:
    return next(m.value for m in at.markdown if "items imported" in m.value)


def test_a_new_catalogue_is_listed_at_once_and_says_what_it_took(solo, app_data):
    app, key = solo
    assert app.sidebar.selectbox[0].value == "solo" and "solo" in app.sidebar.selectbox[0].options
    assert any(re.search(r"ready: 1 items in \d+ s", s.value) for s in app.success), [s.value for s in app.success]
    assert "1 of 1 items imported · from a zip of images" in header(app) and "you may change it" in header(app)
    assert len(key) >= 32 and any(f"key={key}" in m.value for m in app.markdown)
    assert uploads_left(app_data) == []
    assert_no_server_path(app, app_data)
    app.run()  # shown once
    assert not app.code and "solo" in app.sidebar.selectbox[0].options


def test_counts_are_right_after_add_and_after_remove(solo, app_data):
    app, _ = solo
    app.file_uploader(key="add-files").set_value([("new.jpg", jpeg_bytes(solid((30, 200, 30), 64)), "image/jpeg")])
    next(b for b in app.button if b.label == "Add").click().run(timeout=120)
    assert not app.exception and any("1 added" in s.value for s in app.success)
    assert "2 of 2 items" in header(app)
    assert len(app.multiselect(key="remove-items").options) == 2
    assert "2 of 2 items" in next(c.value for c in app.caption if "items" in c.value and " of " in c.value)
    app.multiselect(key="remove-items").select("red_jpg" if "red_jpg" in app.multiselect(key="remove-items").options
                                               else app.multiselect(key="remove-items").options[0])
    next(b for b in app.button if b.label == "Remove").click().run(timeout=120)
    assert not app.exception and any("1 removed" in s.value for s in app.success)
    assert "1 of 1 items" in header(app) and len(app.multiselect(key="remove-items").options) == 1
    assert uploads_left(app_data) == []


def test_a_one_photo_catalogue_works_on_every_page(solo):
    """It has the pretrained approach only (the autoencoder needs 4 images): no page raises."""
    app, _ = solo
    app.switch_page("app_pages/search.py").run()
    app.button(key="example-search").click().run()  # the only item: nothing else to show, and no raise
    assert not app.exception and app.session_state["query"].kind == "item"
    app.file_uploader[0].set_value(("photo.jpg", jpeg_bytes(solid((200, 30, 30), 64)), "image/jpeg")).run()
    assert not app.exception and len(result_images(app)) == 1
    for page in PAGES:
        app.switch_page(page).run()
        assert not app.exception, (page, app.exception)


def fresh_app(app_data, monkeypatch, **params):
    monkeypatch.setenv("IMGSIM_DATA_DIR", str(app_data))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(params)
    at.run()
    return at.switch_page("app_pages/catalogue.py").run()


def editable(at) -> bool:
    return any(u.proto.label.startswith("Photos") for u in at.file_uploader)


def test_the_edit_key_survives_a_reload_and_opens_its_catalogue_only(solo, app_data, monkeypatch):
    import imgsim

    app, key = solo
    reloaded = fresh_app(app_data, monkeypatch, catalog="solo", key=key)  # the link, in another browser
    assert not reloaded.exception and reloaded.sidebar.selectbox[0].value == "solo" and editable(reloaded)
    # another session without the key: read-only, until the key is typed in
    other = fresh_app(app_data, monkeypatch)
    other.sidebar.selectbox[0].set_value("solo").run()
    assert not editable(other) and "read-only" in header(other)
    other.text_input(key="edit-key").set_value("not-the-key")
    next(b for b in other.button if b.label == "Unlock").click().run()
    assert any("does not open" in e.value for e in other.error) and not editable(other)
    # a key of another catalogue
    shutil.copytree(app_data / "catalogs" / "solo", app_data / "catalogs" / "solo2")
    key2 = imgsim.issue_edit_key(app_data / "catalogs" / "solo2")
    other.text_input(key="edit-key").set_value(key2)
    next(b for b in other.button if b.label == "Unlock").click().run()
    assert not editable(other)
    crossed = fresh_app(app_data, monkeypatch, catalog="solo", key=key2)
    assert any("does not open" in e.value for e in crossed.error) and not editable(crossed)
    other.text_input(key="edit-key").set_value(key)
    next(b for b in other.button if b.label == "Unlock").click().run()
    assert not other.exception and editable(other) and other.query_params["key"] == [key]


def test_operator_catalogues_stay_read_only_for_everyone(app, app_data, monkeypatch):
    app.switch_page("app_pages/catalogue.py").run()
    assert "read-only (the operator's)" in header(app) and not editable(app)
    assert not [t for t in app.text_input if t.key == "edit-key"]  # no key can open it
    forged = fresh_app(app_data, monkeypatch, catalog="shop", key="x" * 32)
    assert not editable(forged) and any("does not open" in e.value for e in forged.error)
    build_from(app, "one.zip", zip_of({"red.jpg": jpeg_bytes(solid((200, 30, 30), 64))}), "shop")
    assert any("already exists" in e.value for e in app.error)


def test_the_gallery_finds_items_by_name_and_status(app):
    app.switch_page("app_pages/catalogue.py").run()
    gallery_caption = next(c for c in app.caption if re.fullmatch(r"\d+ of \d+ items", c.value))
    total = int(gallery_caption.value.split()[-2])
    app.text_input(key="gallery-text").set_value("green").run()
    assert not app.exception and any(c.value == f"3 of {total} items" for c in app.caption)
    app.text_input(key="gallery-text").set_value("").run()
    app.selectbox(key="gallery-status").set_value("failed_to_decode").run()
    assert any(c.value == f"1 of {total} items" for c in app.caption)
    assert any("failed\\_to\\_decode" in c.value for c in app.caption)


def test_the_key_holder_rebuilds_and_others_cannot(solo, app_data, monkeypatch):
    import imgsim

    app, key = solo
    two = zip_of({"red.jpg": jpeg_bytes(solid((200, 30, 30), 64)), "blue.jpg": jpeg_bytes(solid((30, 30, 200), 64))})
    build_from(app, "two.zip", two, "solo")
    assert not app.exception and any("ready: 2 items" in s.value for s in app.success)
    assert not app.code and imgsim.check_edit_key(app_data / "catalogs" / "solo", key)  # the key stays
    other = fresh_app(app_data, monkeypatch)
    build_from(other, "two.zip", two, "solo")
    assert any("already exists" in e.value for e in other.error)
    assert imgsim.Catalog.load(app_data / "catalogs" / "solo").manifest["n_ok"] == 2


def test_messages_name_server_files_by_their_file_name_only(tmp_path, monkeypatch):
    from app_support.uploads import public_message, safe_file_name, without_paths

    monkeypatch.setenv("IMGSIM_DATA_DIR", str(tmp_path / "data"))
    upload = tmp_path / "data" / "uploads" / "0123abcd" / "my_shop.zip"
    message = f"{upload} is not a zip; see '{tmp_path}/data/catalogs/x/sources/ab/a.png' (line 2)"
    assert without_paths(message) == "my_shop.zip is not a zip; see 'a.png' (line 2)"
    assert str(tmp_path) not in public_message(message).replace("\\", "")
    assert safe_file_name("../../etc/My Shop!.ZIP", 0) == "My_Shop.zip"
    assert safe_file_name("photo.jpg", 3) == "photo-3.jpg" and safe_file_name("...", 0) == "upload"


def test_map_legends_name_the_top_categories_and_other_in_grey():
    import pandas as pd

    from app_support.charts import OTHER, TOP_CATEGORIES, curve_chart, map_chart, top_categories

    categories = pd.Series([f"c{i}" for i in range(16) for _ in range(16 - i)] + ["", None])
    kept = top_categories(categories)
    assert sorted(set(kept) - {OTHER}) == sorted(f"c{i}" for i in range(TOP_CATEGORIES))
    assert (kept.iloc[-2:] == OTHER).all() and (kept[categories == "c15"] == OTHER).all()
    spec = map_chart(pd.DataFrame({"x": range(len(categories)), "y": 0.0, "category": categories})).to_dict()
    color = spec["encoding"]["color"]
    assert color["scale"]["domain"][-1] == OTHER and len(set(color["scale"]["range"])) == TOP_CATEGORIES + 1
    assert color["legend"]["labelLimit"] == 0  # "Catalogue-tuned EfficientNet-Lite0 (on 'label')" whole
    names = ["Pretrained CNN (EfficientNet-Lite0)", "Catalogue-tuned EfficientNet-Lite0 (on 'label')", "chance"]
    curves = curve_chart(pd.DataFrame({n: [0.5, 0.4] for n in names}, index=[1, 2])).to_dict()
    assert curves["encoding"]["color"]["legend"]["labelLimit"] == 0
    assert curves["encoding"]["color"]["sort"] == names
