"""Why similar: a product pasted into a scene lights up where it was pasted; the CLI writes the map."""

import numpy as np
import pytest
from PIL import Image

import imgsim
from imgsim import phonesim
from imgsim.analysis.explain import ExplainConfig, _cell_mask, _padded, explain_images, match_heat
from imgsim.cli import main

BOX = (240, 120, 440, 280)  # where the product is pasted into a 480x360 scene


@pytest.fixture(scope="module")
def product() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.asarray(Image.fromarray(data.chelsea()).resize((256, 200)))


def scene(seed: int) -> np.ndarray:
    return phonesim.make_scene(np.random.default_rng(seed), (480, 360))


def pasted(canvas: np.ndarray, product: np.ndarray) -> np.ndarray:
    im = Image.fromarray(canvas)
    x0, y0, x1, y1 = BOX
    im.paste(Image.fromarray(product).resize((x1 - x0, y1 - y0)), (x0, y0))
    return np.asarray(im)


def test_a_pasted_product_lights_up_where_it_was_pasted(product, monkeypatch):
    monkeypatch.setattr(phonesim, "_samples", [])  # procedural scenes: nothing in them is the product
    x0, y0, x1, y1 = BOX
    inside = np.zeros((360, 480), bool)
    inside[y0:y1, x0:x1] = True
    for seed in range(3):
        empty = scene(seed)
        found = explain_images(pasted(empty, product), product)
        heat = found.query_heat
        assert heat.shape == (360, 480) and found.result_heat.shape == product.shape[:2]
        assert heat[inside].mean() > heat[~inside].mean() + 0.1
        # The same place without the product does not light up: the heat is the product's.
        before = explain_images(empty, product).query_heat
        assert heat[inside].mean() > before[inside].mean() + 0.1
        assert found.similarity > explain_images(empty, product).similarity


def test_each_cell_scores_its_best_match_elsewhere():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 4, 8)).astype(np.float32), rng.random((2, 5, 8)).astype(np.float32)
    b[1, 4] = 3.0 * a[2, 1]  # the same direction: cosine 1, wherever it sits
    heat_a, heat_b = match_heat(a, b)
    ua = a.reshape(-1, 8) / np.linalg.norm(a.reshape(-1, 8), axis=1, keepdims=True)
    ub = b.reshape(-1, 8) / np.linalg.norm(b.reshape(-1, 8), axis=1, keepdims=True)
    brute = ua @ ub.T
    np.testing.assert_allclose(heat_a.reshape(-1), brute.max(axis=1), atol=1e-6)
    np.testing.assert_allclose(heat_b.reshape(-1), brute.max(axis=0), atol=1e-6)
    assert heat_a[2, 1] == pytest.approx(1.0, abs=1e-6) and heat_b[1, 4] == pytest.approx(1.0, abs=1e-6)
    mask_b = np.ones((2, 5), bool)
    mask_b[1, 4] = False  # a cell left out is nobody's best match and scores 0 itself
    heat_a, heat_b = match_heat(a, b, None, mask_b)
    assert heat_a[2, 1] < 1.0 - 1e-3 and heat_b[1, 4] == 0.0
    with pytest.raises(ValueError, match="same C"):
        match_heat(a, b[..., :4])


def test_padding_and_studio_white_take_no_part():
    photo = np.full((64, 192, 3), 255, np.uint8)
    photo[:, :64] = np.random.default_rng(1).integers(0, 200, (64, 64, 3), dtype=np.uint8)
    square, box = _padded(photo, 192)
    mask = _cell_mask(square, box)
    assert box == (0, 64, 192, 128)
    assert not mask[0].any() and not mask[-1].any()  # the white padding above and below
    assert mask[2, :2].all() and not mask[2, 3:].any()  # texture takes part, the white backdrop not


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="input_size=100"):
        ExplainConfig(input_size=100)
    with pytest.raises(ValueError, match="alpha=2"):
        ExplainConfig(alpha=2)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, product):
    from imgsim.build import BuildOptions, build

    folder = tmp_path_factory.mktemp("cats")
    Image.fromarray(product).save(folder / "cat.png")
    Image.fromarray(np.full((60, 80, 3), (30, 60, 200), np.uint8)).save(folder / "blue.png")
    out = tmp_path_factory.mktemp("explain") / "cat"
    build(str(folder), out, BuildOptions(approaches=("pretrained",)))
    return out


def test_the_facade_explains_a_result_of_a_search(catalog, product, monkeypatch):
    monkeypatch.setattr(phonesim, "_samples", [])
    engine = imgsim.Engine.open(catalog)
    photo = pasted(scene(0), product)
    top = engine.search(photo, "pretrained", 1).ids[0]
    found = imgsim.explain(engine, photo, top)
    assert found.query_heat.shape == photo.shape[:2]
    panel = found.image(height=100)
    assert panel.shape[0] == 100 and panel.shape[1] > 200 and panel.dtype == np.uint8


def test_cli_writes_the_map_and_refuses_an_unknown_id_in_one_line(catalog, product, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray(product).save(photo)
    engine = imgsim.Engine.open(catalog)
    item = engine.items["id"].iloc[0]
    out = tmp_path / "map.png"
    assert main(["explain", str(catalog), str(photo), item, "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > im.height
    capsys.readouterr()
    assert main(["explain", str(catalog), str(photo), "no-such-item", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-item" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()
