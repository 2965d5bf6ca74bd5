"""Every page through streamlit's AppTest, over the tiny built catalogue."""

import shutil

import numpy as np
import pytest
from conftest import REPO, jpeg_bytes, solid
from streamlit.testing.v1 import AppTest

APP = str(REPO / "streamlit_app.py")
PAGES = ["pages/compare.py", "pages/reconstructions.py", "pages/catalogue.py", "pages/evaluation.py"]


@pytest.fixture
def app(built_catalog, _data_dir):
    shutil.copytree(built_catalog, _data_dir / "catalogs" / "shop")
    at = AppTest.from_file(APP, default_timeout=120)
    return at.run()


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
    app.switch_page("pages/compare.py").run()
    assert not app.exception
    assert app.sidebar.slider(key="k-picker").value == 3
    assert len(result_images(app)) == 3 * 2  # both approaches, k each
    assert any("Your photo" in c or "photo.jpg" in c for img in app.image for c in img.captions)
    app.switch_page("streamlit_app.py").run()
    assert [c for img in result_images(app) for c in img.captions] == top_search


def test_switching_catalogue_drops_what_belonged_to_the_old_one(app, built_catalog, _data_dir):
    import shutil

    shutil.copytree(built_catalog, _data_dir / "catalogs" / "other")
    app.run()
    app.button(key="example-search").click().run()
    assert app.session_state["query"].kind == "item" and len(result_images(app)) == 8
    app.switch_page("pages/reconstructions.py").run()
    app.main.radio[0].set_value("Random").run()
    assert not app.exception, app.exception
    app.sidebar.selectbox[0].set_value("other").run()
    assert not app.exception
    assert "query" not in app.session_state and len(app.image) >= 3


def test_a_crop_box_is_kept_with_the_query_and_can_be_dropped(app):
    """The box editor starts from the automatic box; the search then uses that region only."""
    from conftest import jpeg_bytes as jpeg

    scene = np.full((300, 400, 3), 90, np.uint8)
    scene[100:200, 150:250] = (30, 50, 210)
    app.file_uploader[0].set_value(("scene.jpg", jpeg(scene), "image/jpeg")).run()
    assert not app.exception and len(result_images(app)) == 8
    app.toggle(key="crop-search").set_value(True).run()
    assert not app.exception
    box = app.session_state["query"].box
    assert box is not None and 0 <= box[0] < box[2] <= 400 and 0 <= box[1] < box[3] <= 300
    assert any("searched with your box" in c.value for c in app.caption)
    app.switch_page("pages/compare.py").run()  # the box travels with the query
    assert not app.exception and app.session_state["query"].box == box
    app.switch_page("streamlit_app.py").run()
    app.toggle(key="crop-search").set_value(False).run()
    app.button(key="uncrop-search").click().run()
    assert app.session_state["query"].box is None
    app.sidebar.toggle(key="regions-picker").set_value(False).run()
    assert not app.exception and len(result_images(app)) == 8


def test_compare_page_shows_both_columns_with_precision(app):
    app.switch_page("pages/compare.py").run()
    app.button(key="example-compare").click().run()
    assert not app.exception
    assert len(app.subheader) >= 2
    assert any("precision@8" in m.value for m in app.markdown)


def test_reconstructions_modes(app):
    app.switch_page("pages/reconstructions.py").run()
    for mode in ("Browse", "Random", "Worst"):
        app.main.radio[0].set_value(mode).run()
        assert not app.exception
        assert len(app.image) >= 3


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_catalogue_page_imports_an_uploaded_zip(app, shop_dir, _data_dir):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for path in sorted(shop_dir.rglob("*.png"))[:6]:
            archive.write(path, path.relative_to(shop_dir).as_posix())
    app.switch_page("pages/catalogue.py").run()
    assert len(app.text_input) == 1  # no server paths unless the operator lists IMGSIM_LOCAL_ROOTS
    app.file_uploader(key="import-file").set_value(("shop2.zip", buf.getvalue(), "application/zip"))
    app.text_input[0].set_value("uploaded")
    app.button[0].click().run(timeout=300)
    assert not app.exception and not app.error, (app.exception[0].proto if app.exception else app.error[0].value)
    assert any("uploaded" in s.value and "ready" in s.value for s in app.success)
    assert (_data_dir / "catalogs" / "uploaded" / "stores" / "pretrained" / "manifest.json").exists()
    # the session changes its own catalogue: add a photo, remove an item
    app.run()
    assert app.sidebar.selectbox[0].value == "uploaded"
    app.file_uploader(key="add-files").set_value([("new.jpg", jpeg_bytes(solid((200, 200, 30), 64)), "image/jpeg")])
    app.button[0].click().run(timeout=300)
    assert not app.exception and any("1 added" in s.value for s in app.success)
    first = app.multiselect(key="remove-items").options[0]
    app.multiselect(key="remove-items").select(first)
    app.button[1].click().run(timeout=300)
    assert not app.exception and any("1 removed" in s.value for s in app.success)
    # the session may rebuild its own catalogue, but never the operator's
    app.file_uploader(key="import-file").set_value(("shop2.zip", buf.getvalue(), "application/zip"))
    app.text_input[0].set_value("shop")
    build_button(app).click().run()
    assert any("already exists" in e.value for e in app.error)
    app.text_input[0].set_value("../../etc")
    build_button(app).click().run()
    assert any("Choose another name" in e.value for e in app.error)


def build_button(app):
    return next(b for b in app.button if b.label == "Build")


def test_catalogue_page_refuses_a_broken_zip(app):
    app.switch_page("pages/catalogue.py").run()
    app.file_uploader[0].set_value(("bad.zip", b"not a zip at all", "application/zip"))
    app.button[0].click().run()
    assert not app.exception
    assert any("zip" in e.value for e in app.error)


def test_pages_use_only_imgsim_public_api():
    import re

    import imgsim

    for path in [REPO / "streamlit_app.py", *sorted((REPO / "pages").glob("*.py"))]:
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) imgsim\.", text, re.M), f"{path.name} imports below imgsim's facade"
        for name in set(re.findall(r"\bimgsim\.(\w+)", text)):
            assert name in imgsim.__all__, f"{path.name} uses imgsim.{name}, which is not public"


def test_streamlit_does_not_clear_the_shared_keras_session(monkeypatch):
    """Streamlit's per-run Keras clean-up emptied TensorFlow's kernel cache for every session
    (about 85% of the app's CPU per search with 16 sessions, benchmarks/load.py)."""
    import keras
    from streamlit.runtime.scriptrunner import script_runner

    import pages.shared  # noqa: F401  (installs the hook)

    calls = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: calls.append(1))
    script_runner._clean_problem_modules()
    assert calls == []
