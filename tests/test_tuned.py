"""The tuned head: identity kept under photo noise, labels pulled together, honest evaluation,
refusals, save/load, built with no labels, and a pasted product found first."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imgsim.approaches.tuned import cross_validated_scores
from imgsim.approaches.tuned_head import fit_head, label_spread, photo_noise
from imgsim.evaluate import evaluate_embeddings


def photographed_items(seed=0, n=60, dim=24, photos=3, photo_seed=None):
    """Items differ in every direction a little; a photo adds large "scene" noise in dims 0-5.
    ``photo_seed`` draws other photos of the same items."""
    studio = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    rng = np.random.default_rng(seed + 1 if photo_seed is None else photo_seed)
    owners = np.repeat(np.arange(n), photos)
    views = studio[owners] + 0.3 * rng.normal(size=(len(owners), dim))
    views[:, :6] += rng.normal(scale=6.0, size=(len(owners), 6))
    return studio, views.astype(np.float32), owners


def found_first(queries, owners, catalogue):
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    c = catalogue / np.linalg.norm(catalogue, axis=1, keepdims=True)
    return float(np.mean(np.argmax(q @ c.T, axis=1) == owners))


def test_head_finds_the_photographed_item_where_raw_features_do_not():
    studio, views, owners = photographed_items()
    _, test_views, test_owners = photographed_items(photo_seed=99)  # other photos of the same items
    head = fit_head(studio, photo_noise(views, owners, studio), dims=16)
    raw = found_first(test_views, test_owners, studio)
    tuned = found_first(head.apply(test_views), test_owners, head.apply(studio))
    assert tuned > raw + 0.3 and tuned > 0.9, (tuned, raw)


def test_label_term_pulls_items_of_one_label_together():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c", "d"], 15)
    # items differ most in dims 9-23; their label shows only in dims 6-8, weaker than that
    scale = np.where(np.arange(24) >= 9, 1.0, 0.2)
    studio = rng.normal(size=(60, 24)) * scale
    studio[:, 6:9] += np.repeat(np.eye(4, 3) * 1.5, 15, axis=0)
    owners = np.repeat(np.arange(60), 2)
    views = studio[owners] + 0.3 * rng.normal(size=(120, 24))
    noise = photo_noise(views, owners, studio)
    without = fit_head(studio, noise, labels, label_weight=0.0, dims=8).apply(studio)
    with_labels = fit_head(studio, noise, labels, label_weight=3.0, dims=8).apply(studio)
    p_without = evaluate_embeddings(without, labels, 10)["precision@10"]
    p_with = evaluate_embeddings(with_labels, labels, 10)["precision@10"]
    assert p_with > p_without + 0.2, (p_with, p_without)
    assert label_spread(studio, np.full(60, "")) is None  # no labels: no label term


def test_evaluation_never_scores_with_the_query_s_label(monkeypatch):
    import imgsim.approaches.tuned
    import imgsim.evaluate

    studio, views, owners = photographed_items()
    labels = np.repeat(["a", "b", "c", "d", "e"], 12)
    fitted, queried = [], []
    real_fit, real_rank = imgsim.approaches.tuned.fit_head, imgsim.evaluate.ranked_relevance

    def spy_fit(features, noise, labels_, **kwargs):
        fitted.append(set(np.flatnonzero(labels_ != "")))
        return real_fit(features, noise, labels_, **kwargs)

    def spy_rank(embeddings, labels_, k, metric="cosine", queries=None):
        queried.append(set(queries))
        return real_rank(embeddings, labels_, k, metric, queries)

    monkeypatch.setattr(imgsim.approaches.tuned, "fit_head", spy_fit)
    monkeypatch.setattr(imgsim.evaluate, "ranked_relevance", spy_rank)
    scores = cross_validated_scores(studio, labels, 10, photo_noise(views, owners, studio), dims=8)
    assert len(fitted) == len(queried) == 5
    for labelled_rows, query_rows in zip(fitted, queried):
        assert not labelled_rows & query_rows  # no query's label helped fit its head
    assert set().union(*queried) == set(range(len(studio)))  # every item is scored once
    assert "held out" in scores["note"]


def test_refusals():
    from imgsim.approaches.tuned import TunedSettings

    with pytest.raises(ValueError, match=r"N >= 2"):
        fit_head(np.zeros((1, 3)), np.eye(3))
    with pytest.raises(ValueError, match="label_weight=-1"):
        fit_head(np.eye(3), np.eye(3), label_weight=-1)
    with pytest.raises(ValueError, match="at least one view"):
        photo_noise(np.zeros((0, 3)), np.zeros(0, int), np.eye(3))
    with pytest.raises(ValueError, match="Received: photos_per_item=0"):
        TunedSettings(photos_per_item=0)
    with pytest.raises(ValueError, match="Received: label_weight='x'"):
        TunedSettings(label_weight="x")


def distinct_shop(root):
    """Six products that share neither colour nor shape, on studio white, no labels."""
    colours = [(200, 30, 30), (30, 160, 40), (30, 50, 200), (230, 200, 20), (140, 40, 160), (20, 20, 20)]
    root.mkdir(parents=True)
    for i, colour in enumerate(colours):
        im = Image.new("RGB", (96, 96), (255, 255, 255))
        draw = ImageDraw.Draw(im)
        if i == 0:
            draw.rectangle([20, 14, 76, 82], fill=colour)
        elif i == 1:
            draw.ellipse([14, 20, 82, 76], fill=colour)
        elif i == 2:
            draw.polygon([(48, 10), (86, 84), (10, 84)], fill=colour)
        elif i == 3:
            for y in range(14, 82, 12):
                draw.rectangle([16, y, 80, y + 6], fill=colour)
        elif i == 4:
            draw.rectangle([40, 10, 56, 86], fill=colour)
            draw.rectangle([10, 40, 86, 56], fill=colour)
        else:
            draw.ellipse([12, 12, 84, 84], outline=colour, width=10)
        im.save(root / f"product_{i}.png")
    return root


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """The distinct shop built with pretrained and tuned (one photo per item, to keep it fast)."""
    from imgsim.approaches.tuned import TunedSettings
    from imgsim.build import BuildOptions, build

    folder = distinct_shop(tmp_path_factory.mktemp("distinct") / "photos")
    out = folder.parent / "catalog"
    build(str(folder), out, BuildOptions(approaches=("tuned",), settings={"tuned": TunedSettings(photos_per_item=1)}))
    return out


def test_built_without_labels_and_a_pasted_product_comes_back_first(unlabelled):
    from imgsim.engine import Engine
    from imgsim.phonesim import simulate_photo

    manifest = json.loads((unlabelled / "models" / "tuned" / "manifest.json").read_text())
    assert manifest["label_column"] is None and manifest["photographed_items"] == 6
    engine = Engine.open(unlabelled)
    assert "tuned" in engine.approaches()
    catalog = engine.catalog
    for row in range(6):
        product = catalog.load_square(row, 96)
        photo = simulate_photo(product, np.random.default_rng(100 + row), size=(640, 480), split="eval")
        result = engine.search(photo.rgb, "tuned", 3)
        assert result.items["id"].iloc[0] == catalog.ok["id"].iloc[row]
    engine.close()


def test_save_load_round_trip_refused_for_another_base_and_refit_changes_fingerprint(unlabelled, tmp_path):
    from imgsim.approaches import get
    from imgsim.approaches.features import ExtractorOptions, load_extractor
    from imgsim.approaches.tuned import TunedExtractor, TunedSettings
    from imgsim.build import BuildOptions, retrain
    from imgsim.ingest.catalog import Catalog
    from imgsim.storage.artifacts import ArtifactMismatchError

    root = tmp_path / "catalog"
    shutil.copytree(unlabelled, root, symlinks=True)
    base = load_extractor("efficientnet_lite0")
    model = TunedExtractor.load(root / "models" / "tuned", base)
    again = TunedExtractor.load(root / "models" / "tuned", base)
    batch = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_allclose(again.embed(batch), model.embed(batch), atol=1e-6)
    assert model.noise().shape == (base.dim, base.dim)
    other = load_extractor("efficientnet_lite0", ExtractorOptions(flip=True))
    with pytest.raises(ArtifactMismatchError, match="other pretrained features"):
        TunedExtractor.load(root / "models" / "tuned", other)
    catalog = Catalog.load(root)
    assert get("tuned").settings_from_manifest(catalog) == TunedSettings(photos_per_item=1)
    retrain(catalog, "tuned", BuildOptions(settings={"tuned": TunedSettings(photos_per_item=1, seed=1)}))
    refitted = TunedExtractor.load(root / "models" / "tuned", base)
    assert refitted.fingerprint != model.fingerprint and refitted.manifest["seed"] == 1
    store = json.loads((root / "stores" / "tuned" / "manifest.json").read_text())
    assert store["fingerprint"] == refitted.fingerprint  # the store was re-mapped with the new head


def test_tuned_uses_labels_where_they_repeat_and_refuses_a_missing_column(built_catalog, tmp_path):
    from imgsim.approaches import APPROACHES, NotApplicableError
    from imgsim.approaches.tuned import TunedSettings
    from imgsim.build import BuildOptions, build_approaches
    from imgsim.engine import Engine
    from imgsim.ingest.catalog import Catalog

    root = tmp_path / "shop"
    shutil.copytree(built_catalog, root, symlinks=True)
    catalog = Catalog.load(root)
    lines: list[str] = []
    settings = {"tuned": TunedSettings(photos_per_item=1)}
    assert build_approaches(catalog, BuildOptions(approaches=("tuned",), settings=settings),
                            log=lines.append) == ["pretrained", "tuned"]
    assert any("'label' pulled together" in line for line in lines)
    build_approaches(catalog, BuildOptions(approaches=("tuned",), settings=settings), log=lines.append)
    assert "tuned: head and store up to date" in lines
    engine = Engine.open(root)
    assert "tuned" in engine.approaches() and "Lite0" in engine.label("tuned")
    result = engine.search_item(0, "tuned", k=3)
    assert set(result.items["category"]) == {engine.items["category"].iloc[0]}
    report = engine.evaluate("label", 3)
    assert "held out" in report["tuned"]["note"]
    engine.close()
    with pytest.raises(NotApplicableError, match="articleType"):
        build_approaches(catalog, BuildOptions(approaches=("tuned",), label_column="articleType"))
    tuned = APPROACHES["tuned"]
    assert tuned.label_column(catalog, None) == "label"
    unlabelled = catalog.ok.assign(label="")
    catalog.__dict__["ok"] = unlabelled
    assert tuned.label_column(catalog, None) == "category"
    catalog.__dict__["ok"] = unlabelled.assign(category="")
    assert tuned.label_column(catalog, None) is None  # identity alone: still built
    assert tuned.not_built_reason(catalog) == "not fitted yet for this catalogue"


def test_added_items_are_mapped_not_refitted_until_retrain(built_catalog, tmp_path):
    from test_autoencoder import add_yellows

    from imgsim import approaches
    from imgsim.approaches.tuned import TunedSettings
    from imgsim.build import BuildOptions, build_approaches, retrain
    from imgsim.engine import Engine
    from imgsim.ingest.catalog import Catalog

    root = tmp_path / "shop"
    shutil.copytree(built_catalog, root, symlinks=True)
    settings = TunedSettings("category", photos_per_item=1)
    build_approaches(Catalog.load(root), BuildOptions(approaches=("tuned",), settings={"tuned": settings}))
    catalog = add_yellows(root, tmp_path, 4)
    tuned = approaches.get("tuned")
    assert tuned.settings_from_manifest(catalog) == settings  # refresh kept the settings
    model = Engine.open(root).model("tuned")
    store = json.loads((root / "stores" / "tuned" / "manifest.json").read_text())
    assert store["count"] == 16 and model.manifest["fitted_items"] == 12  # mapped with the old fit
    drift = tuned.drift(catalog, model)
    assert drift.needs_retrain and drift.line == "tuned: fitted on 12 items; 4 items added since; refitting is advised"
    retrain(catalog, "tuned", BuildOptions(settings={"tuned": settings}))
    refitted = json.loads((root / "models" / "tuned" / "manifest.json").read_text())
    assert refitted["fitted_items"] == 16 and refitted["label_column"] == "category"
