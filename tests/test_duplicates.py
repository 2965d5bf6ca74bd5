"""Near-duplicate groups: known copies grouped with their originals, distinct photos kept apart."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

import imgsim
from imgsim.analysis.alignment import grey, match_score
from imgsim.analysis.copies import Alteration, alter
from imgsim.analysis.duplicates import (
    DuplicateConfig,
    candidate_pairs,
    load_threshold,
    save_threshold,
    threshold_dir,
)
from imgsim.cli import main
from imgsim.storage.artifacts import ArtifactError, ArtifactMismatchError

NAMES = ("chelsea", "coffee", "rocket", "astronaut", "camera", "coins", "brick", "clock")


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    data = pytest.importorskip("skimage.data")
    out = {}
    for name in NAMES:
        arr = getattr(data, name)()
        arr = np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr[:, :, :3]
        out[name] = np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize((128, 96)))
    return out


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


#: The copies in the catalogue: file stem -> the original's stem.
COPIES = {"chelsea_again": "chelsea", "coffee_q40": "coffee", "rocket_half": "rocket",
          "astronaut_crop": "astronaut", "camera_banner": "camera"}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, photos):
    from imgsim.build import BuildOptions, build

    folder = tmp_path_factory.mktemp("dups")
    for name, rgb in photos.items():
        (folder / f"{name}.jpg").write_bytes(_jpeg(rgb, 92))
    shutil.copyfile(folder / "chelsea.jpg", folder / "chelsea_again.jpg")  # the same bytes
    (folder / "coffee_q40.jpg").write_bytes(_jpeg(photos["coffee"], 40))
    Image.fromarray(photos["rocket"]).resize((64, 48)).save(folder / "rocket_half.png")
    Image.fromarray(photos["astronaut"][5:89, 6:119]).save(folder / "astronaut_crop.png")  # 88% of each side
    banner = Image.fromarray(photos["camera"])
    ImageDraw.Draw(banner).rectangle((0, 80, 128, 96), fill=(200, 0, 0))
    banner.save(folder / "camera_banner.png")
    out = tmp_path_factory.mktemp("dupcat") / "shop"
    build(str(folder), out, BuildOptions(approaches=("pretrained",)))
    return out


@pytest.fixture(scope="module")
def report(catalog):
    return imgsim.find_duplicates(imgsim.Engine.open(catalog), config=DuplicateConfig(calibration_items=13))


def _stem_groups(report) -> list[set[str]]:
    return [{item["name"].replace(" ", "_") for item in group} for group in report.items]  # names from stems


def test_known_copies_are_grouped_and_distinct_photos_kept_apart(report):
    groups = _stem_groups(report)
    for copy, original in COPIES.items():
        assert {copy, original} in groups, (copy, groups)
    assert len(groups) == len(COPIES)  # nothing else joined: the other photos stay apart
    same_bytes = [p for p in report.pairs if p["reason"] == "same bytes"]
    assert len(same_bytes) == 1 and same_bytes[0]["score"] is None
    assert report.calibrated and report.threshold.positives["count"] == 13


def test_the_threshold_is_saved_loaded_and_refused_for_another_model(catalog, report, tmp_path):
    root = threshold_dir(catalog)
    model = report.threshold.model
    assert load_threshold(root, model) == report.threshold
    with pytest.raises(ArtifactMismatchError, match="fingerprint"):
        load_threshold(root, {**model, "fingerprint": "another-model"})
    again = imgsim.find_duplicates(imgsim.Engine.open(catalog))
    assert not again.calibrated and again.threshold == report.threshold
    assert _stem_groups(again) == _stem_groups(report)
    copy = tmp_path / "t"
    save_threshold(copy, report.threshold)
    (copy / "threshold.json").write_text("{}", "utf-8")  # damaged: its size no longer matches
    with pytest.raises(ArtifactError, match="damaged|does not match"):
        load_threshold(copy, model)


def test_cli_duplicates_json(catalog, capsys):
    assert main(["duplicates", str(catalog), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out["threshold"], float)
    assert all(set(item) == {"id", "name"} for group in out["groups"] for item in group)
    assert {"chelsea", "chelsea again"} in [{i["name"] for i in g} for g in out["groups"]]
    assert main(["duplicates", str(catalog)]) == 0
    assert "groups of near-duplicates" in capsys.readouterr().out


def test_a_copy_scores_above_another_photo(photos):
    rng = np.random.default_rng(0)
    original = photos["coffee"]
    others = [match_score(grey(original), grey(photos[n])) for n in NAMES if n != "coffee"]
    for kind in Alteration:
        copy = alter(original, kind, rng)
        assert match_score(grey(original), grey(copy)) > max(others) + 0.05, kind


def test_alterations_keep_to_their_strengths(photos):
    rng = np.random.default_rng(3)
    rgb = photos["rocket"]
    for _ in range(5):
        small = alter(rgb, "resize", rng)
        assert 0.39 <= small.shape[1] / 128 <= 0.71
        cropped = alter(rgb, "crop", rng)
        assert 0.84 <= cropped.shape[1] / 128 <= 0.93 and 0.84 <= cropped.shape[0] / 96 <= 0.93
    for kind in ("jpeg", "relight", "recolour", "rotate", "banner"):
        out = alter(rgb, kind, rng)
        assert out.shape == rgb.shape and out.dtype == np.uint8 and not np.array_equal(out, rgb)
    with pytest.raises(ValueError, match="16 px"):
        alter(rgb[:8], "jpeg", rng)
    with pytest.raises(ValueError):
        alter(rgb, "sepia", rng)


def test_candidates_are_the_brute_force_neighbours_above_the_floor():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(40, 6)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    pairs, cosines = candidate_pairs(v, 3, 0.2, batch=7)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    expected = set()
    for i in range(40):
        for j in np.argsort(-sims[i])[:3]:
            if sims[i, j] >= 0.2:
                expected.add((min(i, j), max(i, j)))
    assert {tuple(p) for p in pairs.tolist()} == expected
    np.testing.assert_allclose(cosines, [sims[i, j] for i, j in pairs], atol=1e-6)


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="neighbours=0"):
        DuplicateConfig(neighbours=0)
    with pytest.raises(ValueError, match="calibration_items=3"):
        DuplicateConfig(calibration_items=3)
