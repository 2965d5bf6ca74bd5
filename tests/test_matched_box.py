"""Which part of the photo matched: each result's ``matched_box`` is the region that won its score."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from imgsim.cli import main
from imgsim.engine import Engine

PASTED = (280, 150, 400, 294)  # where the product goes in the scene: x0, y0, x1, y1


@pytest.fixture(scope="module")
def engine(built_catalog):
    return Engine.open(built_catalog)


@pytest.fixture(scope="module")
def scene(shop_dir) -> np.ndarray:
    """A 448x336 noisy table with a blue product of the shop pasted at :data:`PASTED`."""
    rng = np.random.default_rng(3)
    scene = np.clip(rng.normal(140, 25, (336, 448, 3)), 0, 255).astype(np.uint8)
    x0, y0, x1, y1 = PASTED
    product = Image.open(shop_dir / "blues" / "blue_1.png").convert("RGB").resize((x1 - x0, y1 - y0))
    scene[y0:y1, x0:x1] = np.asarray(product)
    return scene


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_the_pasted_product_is_the_part_that_matched(engine, scene):
    result = engine.search(scene, "pretrained", k=3)
    assert result.regions > 1 and set(result.items["category"]) == {"blues"}
    for box in result.items["matched_box"]:
        assert iou(box, PASTED) >= 0.4, box  # the product's region, not the whole table
        assert (box[2] - box[0]) * (box[3] - box[1]) < scene.shape[0] * scene.shape[1] / 4


def test_a_box_or_a_single_vector_is_its_own_matched_part(engine, scene):
    boxed = engine.search(scene, "pretrained", k=2, box=(270, 140, 999, 300))
    assert boxed.items["matched_box"].tolist() == [(270, 140, 448, 300)] * 2  # clipped to the photo
    whole = engine.search(scene, "autoencoder", k=2)  # no regions: the automatic product box
    assert whole.auto_box is None and whole.items["matched_box"].notna().all()
    assert iou(whole.items["matched_box"][0], PASTED) >= 0.4
    item = engine.search_item(0, "pretrained", k=2)  # a catalogue item: no part of a photo
    assert item.items["matched_box"].isna().all()


def test_query_json_carries_the_matched_box(built_catalog, scene, tmp_path, capsys):
    photo = tmp_path / "scene.png"
    Image.fromarray(scene).save(photo)
    assert main(["query", str(built_catalog), str(photo), "-k", "2", "--json"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    for row in answer["approaches"]["pretrained"]["results"]:
        assert len(row["matched_box"]) == 4 and iou(row["matched_box"], PASTED) >= 0.4


def test_the_app_shows_the_matched_part_on_the_photo(built_catalog, scene, tmp_path, monkeypatch):
    import io
    import shutil

    from conftest import REPO
    from streamlit.testing.v1 import AppTest

    shutil.copytree(built_catalog, tmp_path / "appdata" / "catalogs" / "shop")
    monkeypatch.setenv("IMGSIM_DATA_DIR", str(tmp_path / "appdata"))
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    buf = io.BytesIO()
    Image.fromarray(scene).save(buf, format="PNG")
    at.sidebar.slider(key="k-picker").set_value(2).run()
    at.file_uploader[0].set_value(("scene.png", buf.getvalue(), "image/png")).run()
    assert not at.exception, at.exception
    popovers = at.get("popover")
    assert len(popovers) == 2  # one per result
    shown = [img for img in at.image if "gave this score" in "".join(img.captions)]
    assert len(shown) == 2
