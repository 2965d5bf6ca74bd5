"""An honest "no good match": the calibrated line, its save/load and refusal, and the flag on answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imgsim import calibration
from imgsim.calibration import MatchThreshold, fit_threshold, load_threshold, save_threshold
from imgsim.storage import layout
from imgsim.storage.artifacts import ArtifactMismatchError

MODEL = {"model": "efficientnet_lite0", "fingerprint": "abc", "options": {}}
STORE = {**MODEL, "metric": "cosine"}


def test_fit_halfway_between_the_quantiles_when_apart() -> None:
    positives = np.linspace(0.7, 0.9, 21)  # 5% quantile 0.71
    negatives = np.linspace(0.2, 0.5, 31)  # 95% quantile 0.485
    line = fit_threshold("pretrained", positives, negatives, "cosine", MODEL)
    assert line.score == pytest.approx((0.71 + 0.485) / 2, abs=1e-6)
    assert line.positives["flagged"] == 0.0 and line.negatives["flagged"] == 1.0
    assert line.flags(0.5) and not line.flags(0.75)


def test_fit_keeps_own_products_when_the_scores_overlap() -> None:
    positives = np.linspace(0.4, 0.9, 101)
    negatives = np.linspace(0.3, 0.8, 101)
    line = fit_threshold("pretrained", positives, negatives, "cosine", MODEL)
    assert line.score == pytest.approx(np.quantile(positives, 0.05))
    assert line.positives["flagged"] <= 0.05
    assert 0.0 < line.negatives["flagged"] < 0.5


def test_fit_a_distance_flags_far_results() -> None:
    line = fit_threshold("autoencoder", [1.0, 1.1, 1.2, 1.0], [3.0, 3.5, 4.0, 3.2], "euclidean", MODEL)
    assert 1.2 < line.score < 3.0
    assert line.flags(3.1) and not line.flags(1.1)


def test_fit_refuses_empty_and_bad_metric() -> None:
    with pytest.raises(ValueError, match="Received: 0 and 2"):
        fit_threshold("pretrained", [], [0.1, 0.2], "cosine", MODEL)
    with pytest.raises(ValueError, match="metric='dot'"):
        MatchThreshold("pretrained", 0.5, "dot", MODEL, {}, {})


def test_save_then_load_equals_and_another_model_is_refused(tmp_path: Path) -> None:
    line = fit_threshold("pretrained", [0.8, 0.9, 0.85], [0.3, 0.4, 0.35], "cosine", MODEL)
    root = layout.match_dir(tmp_path, "pretrained")
    save_threshold(root, line)
    assert load_threshold(root, "pretrained", STORE) == line
    with pytest.raises(ArtifactMismatchError, match="fingerprint"):
        load_threshold(root, "pretrained", {**STORE, "fingerprint": "other"})
    with pytest.raises(ArtifactMismatchError, match="metric"):
        load_threshold(root, "pretrained", {**STORE, "metric": "euclidean"})
    with pytest.raises(ArtifactMismatchError, match="approach"):
        load_threshold(root, "tuned", STORE)


def make_shapes(root: Path, n: int = 24) -> Path:
    """``n`` patterned products on white (striped, checked and dotted), three categories."""
    rng = np.random.default_rng(5)
    for i in range(n):
        kind = ("stripes", "checks", "dots")[i % 3]
        (root / kind).mkdir(parents=True, exist_ok=True)
        a, b = (tuple(int(c) for c in rng.integers(10, 230, 3)) for _ in range(2))
        im = Image.new("RGB", (128, 128), (255, 255, 255))
        draw = ImageDraw.Draw(im)
        x0, y0, x1, y1 = 16, 12, 112, 116
        draw.rectangle([x0, y0, x1, y1], fill=a)
        step = int(rng.integers(8, 16))
        for t in range(0, 104, step):
            if kind == "stripes":
                draw.rectangle([x0, y0 + t, x1, y0 + t + step // 2], fill=b)
            elif kind == "checks":
                for u in range(0, 96, step):
                    if (t // step + u // step) % 2:
                        draw.rectangle([x0 + u, y0 + t, x0 + u + step, y0 + t + step], fill=b)
            else:
                for u in range(0, 96, step):
                    draw.ellipse([x0 + u + 2, y0 + t + 2, x0 + u + step - 2, y0 + t + step - 2], fill=b)
        im.save(root / kind / f"{kind}_{i}.png")
    return root


@pytest.fixture(scope="module")
def shapes_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from imgsim.build import BuildOptions, build

    shop = make_shapes(tmp_path_factory.mktemp("shapes"))
    out = tmp_path_factory.mktemp("catalogs") / "shapes"
    build(str(shop), out, BuildOptions(approaches=("pretrained",)))
    return out


def test_own_photo_is_a_match_and_unrelated_photos_are_not(shapes_catalog: Path) -> None:
    from imgsim.engine import Engine
    from imgsim.phonesim import product_mask, simulate_photo

    engine = Engine.open(shapes_catalog)
    assert (layout.match_dir(shapes_catalog, "pretrained") / "manifest.json").is_file()
    rng = np.random.default_rng(11)
    product = engine.catalog.load_square(0, 224)
    photo = simulate_photo(np.dstack([product, (product_mask(product) * 255).astype(np.uint8)]), rng,
                           size=(640, 480)).rgb
    own = engine.search(photo, "pretrained", 3)
    assert own.no_good_match is False and own.match_threshold is not None
    held_out = np.random.default_rng(7)  # not the build's seed: photos the line never saw
    scene, cat = calibration.unrelated_photo(held_out, 0), calibration.unrelated_photo(held_out, 2)
    assert engine.search(scene, "pretrained", 3).no_good_match is True
    assert engine.search(cat, "pretrained", 3).no_good_match is True
    # a catalogue item as the query, or another metric than the line's, has no verdict
    assert engine.search_item(0, "pretrained", 3).no_good_match is None
    assert engine.search(scene, "pretrained", 3, metric="euclidean").no_good_match is None


def test_json_carries_the_flag(shapes_catalog: Path, tmp_path: Path, capsys) -> None:
    from imgsim.cli import main

    Image.fromarray(calibration.unrelated_photo(np.random.default_rng(7), 0)).save(tmp_path / "scene.png")
    assert main(["query", str(shapes_catalog), str(tmp_path / "scene.png"), "--json", "-k", "2"]) == 0
    answer = json.loads(capsys.readouterr().out)[0]["approaches"]["pretrained"]
    assert answer["no_good_match"] is True and isinstance(answer["match_threshold"], float)
    assert main(["query", str(shapes_catalog), str(tmp_path / "scene.png"), "-k", "2"]) == 0
    assert "no good match" in capsys.readouterr().out


def test_a_line_for_another_model_is_ignored_with_its_reason(shapes_catalog: Path, tmp_path: Path) -> None:
    import shutil
    import threading

    from imgsim.engine import Engine
    from imgsim.loader import Loader

    copy = tmp_path / "copy"
    shutil.copytree(shapes_catalog, copy, symlinks=True)
    root = layout.match_dir(copy, "pretrained")
    line = load_threshold(root, "pretrained", Engine.open(copy).store("pretrained").manifest)
    save_threshold(root, MatchThreshold(**{**line.__dict__, "model": {**line.model, "fingerprint": "old"}}))
    engine = Engine.open(copy)
    assert engine.search(calibration.unrelated_photo(np.random.default_rng(7), 0), "pretrained",
                         2).no_good_match is None
    loader = Loader(engine.catalog, engine.items, threading.RLock())
    assert loader.match_threshold("pretrained") is None
    assert "made with fingerprint='old'" in loader.no_line["pretrained"]
    # what build, refresh and retrain call: the stale line is fitted again, a current one is kept
    refitted = calibration.calibrate(engine.catalog, ["pretrained"])
    assert refitted["pretrained"].model == line.model
    assert calibration.calibrate(engine.catalog, ["pretrained"]) == {}
    assert Engine.open(copy).search(calibration.unrelated_photo(np.random.default_rng(7), 0), "pretrained",
                                    2).no_good_match is True


def test_a_tiny_catalogue_gets_no_line(built_catalog: Path) -> None:
    from imgsim.engine import Engine

    engine = Engine.open(built_catalog)
    assert not layout.match_dir(built_catalog, "pretrained").exists()
    result = engine.search(np.full((64, 64, 3), 90, np.uint8), "pretrained", 2)
    assert result.no_good_match is None and result.match_threshold is None
    assert calibration.calibrate(engine.catalog, ["pretrained"]) == {}


@pytest.mark.parametrize("page", ["app_pages/search.py", "app_pages/compare.py"])
def test_the_app_says_nothing_like_this_only_for_an_unrelated_photo(shapes_catalog: Path, tmp_path: Path,
                                                                    monkeypatch, page: str) -> None:
    import io
    import shutil

    from conftest import REPO
    from streamlit.testing.v1 import AppTest

    shutil.copytree(shapes_catalog, tmp_path / "catalogs" / "shapes", symlinks=True)
    monkeypatch.setenv("IMGSIM_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    if page != "app_pages/search.py":
        at.switch_page(page).run()

    def shown_after(rgb: np.ndarray) -> list[str]:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        at.file_uploader[0].set_value(("photo.png", buf.getvalue(), "image/png")).run()
        assert not at.exception, at.exception
        return [m.value for m in at.info]

    message = "Nothing like this in the catalogue: the closest items are shown below."
    assert message in shown_after(calibration.unrelated_photo(np.random.default_rng(7), 0))
    from imgsim.phonesim import product_mask, simulate_photo

    product = np.asarray(Image.open(next((shapes_catalog / "thumbs").rglob("*.*"))).convert("RGB"))
    rgba = np.dstack([product, (product_mask(product) * 255).astype(np.uint8)])
    assert message not in shown_after(simulate_photo(rgba, np.random.default_rng(11), size=(640, 480)).rgb)
