"""Contracts every approach keeps (in the style of keras-hub's shared backbone test).

Two harnesses: every model embeds ``(N, S, S, 3)`` uint8 into ``(N, dim)`` float32, reloads to the
same vectors and is refused by a store built with another model; and every *registered approach*
builds, reads its settings back from its manifests, loads the model its store was built with,
says how far the catalogue drifted, and maps region vectors into its store's space where it
declares regions. A new approach is tested by being registered: the recipe test at the end
registers a toy colour-histogram approach with one line and builds, searches and refreshes it
through ``imgsim.build`` and ``imgsim.Engine``, which know nothing of it.
"""

import dataclasses
import shutil

import numpy as np
import pytest
from conftest import FakeExtractor, solid
from PIL import Image

from imgsim import approaches as approaches_mod
from imgsim.approaches.base import Approach, Drift, ensure_store
from imgsim.storage.artifacts import ArtifactError, read_manifest
from imgsim.storage.stores import Store, StoreMismatchError, build_store, model_spec, store_path


def lite0(tmp_path, catalog):
    from imgsim.approaches.features import load_extractor

    model = load_extractor("efficientnet_lite0")
    return model, lambda: load_extractor("efficientnet_lite0"), True


def autoencoder(variant):
    def make(tmp_path, catalog):
        from imgsim.approaches import load_squares
        from imgsim.approaches.autoencoder import Autoencoder, AutoencoderConfig, train

        size = 16 if variant == "conv" else 32
        config = AutoencoderConfig(variant=variant, image_size=size, latent_dim=8, epochs=1)
        model = train(load_squares(catalog, size), tmp_path / f"ae-{variant}", config)
        return model, lambda: Autoencoder.load(tmp_path / f"ae-{variant}"), False
    return make


def tuned(tmp_path, catalog):
    from imgsim.approaches.features import load_extractor
    from imgsim.approaches.tuned import TunedExtractor, fit_head, save_projection
    from imgsim.approaches.tuned_head import photo_noise, training_views
    from imgsim.storage.stores import iter_batches

    base = load_extractor("efficientnet_lite0")
    features = np.concatenate([base.embed(b) for b in iter_batches(catalog.thumb_paths(), 224, 16)])
    rows = np.arange(len(features))
    views, owners = training_views(lambda r: catalog.load_square(r, 256), rows, base.embed, 224, 1)
    noise = photo_noise(views, owners, features)
    head = fit_head(features, noise, catalog.ok["category"].to_numpy(), dims=16)
    save_projection(tmp_path / "tuned", head, noise, base, {"label_column": "category", "fitted_items": len(rows)})
    return TunedExtractor.load(tmp_path / "tuned", base), lambda: TunedExtractor.load(tmp_path / "tuned", base), True


def fake(tmp_path, catalog):
    return FakeExtractor(), FakeExtractor, True


MODELS = {"lite0": lite0, "autoencoder-conv": autoencoder("conv"), "autoencoder-seed": autoencoder("seed"),
          "tuned": tuned, "fake": fake}


@pytest.fixture(scope="module")
def catalog(shop_dir, tmp_path_factory):
    from imgsim.ingest.catalog import ingest

    return ingest(str(shop_dir), tmp_path_factory.mktemp("contract") / "shop")


@pytest.mark.parametrize("kind", list(MODELS))
def test_every_model_keeps_the_extractor_contract(kind, catalog, tmp_path):
    model, reload, unit = MODELS[kind](tmp_path, catalog)
    assert isinstance(model.name, str) and model.name and isinstance(model.fingerprint, str) and model.fingerprint
    assert isinstance(model.options, dict) and model.dim > 0 and model.image_size > 0
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (3, model.image_size, model.image_size, 3), dtype=np.uint8)
    out = model.embed(batch)
    assert out.shape == (3, model.dim) and out.dtype == np.float32 and np.isfinite(out).all()
    if unit:
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert model.embed(batch[:0]).shape == (0, model.dim)
    again = reload()  # save/load round trip: the same vectors from the reloaded model
    np.testing.assert_allclose(again.embed(batch), out, atol=1e-5)
    assert again.fingerprint == model.fingerprint
    # a store built with it is refused for a model that differs (another fingerprint)
    build_store(catalog, kind, model, batch_size=4)
    Store.load(store_path(catalog, kind), catalog, model_spec(kind, again))
    other = {**model_spec(kind, model), "fingerprint": model.fingerprint + "-other"}
    with pytest.raises(StoreMismatchError, match="fingerprint"):
        Store.load(store_path(catalog, kind), catalog, other)


# -- the approach contract, over the registry ------------------------------------------------------

def example_settings(name):
    """Settings to build ``name`` with in the tiny shop (cheap; not the defaults where that costs)."""
    from imgsim.approaches.autoencoder import AutoencoderConfig
    from imgsim.approaches.tuned import TunedSettings
    from imgsim.build import BuildOptions

    known = {"autoencoder": AutoencoderConfig(image_size=16, latent_dim=8, epochs=2),  # as built_catalog's
             "tuned": TunedSettings(label_column="category", photos_per_item=1)}
    return known.get(name) or approaches_mod.get(name).default_settings(BuildOptions())


def check_approach_contract(name, root, settings):
    """Builds approach ``name`` in the catalogue at ``root`` and checks everything it promises."""
    from imgsim.approaches.regions import RegionConfig, RegionEmbedder
    from imgsim.build import BuildOptions, build_approaches, retrain
    from imgsim.engine import Engine
    from imgsim.ingest.catalog import Catalog

    approach = approaches_mod.get(name)
    catalog = Catalog.load(root)
    assert build_approaches(catalog, BuildOptions(approaches=(name,), settings={name: settings}))[-1] == name
    # the settings come back from its manifests as they went in (what a refresh rebuilds with)
    assert approach.settings_from_manifest(Catalog.load(root)) == settings
    engine = Engine.open(root)
    assert name in engine.approaches() and engine.label(name)
    manifest = engine.store(name).manifest
    model = approach.load_model(catalog, manifest, engine.model)
    square = catalog.load_square(0, model.image_size)
    vector = model.embed(square[None])
    assert vector.shape == (1, manifest["dim"]) and vector.dtype == np.float32
    # the model that loads is the one the store was built with: it gives item 0 its stored row
    np.testing.assert_allclose(vector[0], np.asarray(engine.store(name).embeddings[0]), atol=1e-4)
    drift = approach.drift(catalog, model)
    if approach.learns:
        assert isinstance(drift, Drift) and drift.approach == name and drift.line.startswith(f"{name}: ")
        assert "python -m" not in drift.line and not drift.needs_retrain  # nothing was added
    else:
        assert drift is None
        with pytest.raises(ValueError, match="learns"):
            retrain(catalog, name)
    support = approach.region_support(manifest)
    if not approach.supports_regions:
        assert support.extractor is None and support.reason
        return
    assert support.extractor is not None, support.reason
    # region vectors, mapped by the approach, land in its store's space: the whole-image region
    # of an item's square is the vector its model gives it
    embedder = RegionEmbedder(support.extractor, RegionConfig())
    whole = embedder.embed_squares(catalog.load_square(0, embedder.image_size)[None])
    np.testing.assert_allclose(approach.region_vectors(model, whole), vector, atol=1e-3)


@pytest.mark.parametrize("name", approaches_mod.names())
def test_every_registered_approach_keeps_the_approach_contract(name, built_catalog, tmp_path):
    root = tmp_path / "shop"
    shutil.copytree(built_catalog, root)
    check_approach_contract(name, root, example_settings(name))


def test_region_support_says_why_not_for_stores_regions_cannot_reproduce():
    pretrained, tuned = approaches_mod.get("pretrained"), approaches_mod.get("tuned")
    gem = {"model": "efficientnet_lite0", "options": {"pooling": "gem", "flip": False, "gem_p": 3.0}}
    assert "pooling options" in pretrained.region_support(gem).reason
    vgg = {"model": "vgg16_fc1", "options": {"pooling": "avg", "flip": False}}
    assert pretrained.region_support(vgg).reason == "vgg16_fc1 has no feature map to pool regions from"
    lite2 = {"model": "tuned_efficientnet_lite2",
             "options": {"label_column": "label", "base_options": {"pooling": "avg", "flip": False}}}
    assert tuned.region_support(lite2).extractor == "efficientnet_lite2"  # its own base, not lite0
    assert approaches_mod.get("autoencoder").region_support({}).extractor is None


def test_settings_are_validated_with_what_was_received():
    from imgsim.approaches.pretrained import PretrainedSettings
    from imgsim.approaches.tuned import TunedSettings
    from imgsim.build import BuildOptions

    with pytest.raises(ValueError, match="Received: extractor='resnet50'"):
        PretrainedSettings(extractor="resnet50")
    with pytest.raises(ValueError, match="Received: label_column=''"):
        TunedSettings(label_column="")
    with pytest.raises(ValueError, match="must be AutoencoderConfig. Received: TunedSettings"):
        BuildOptions(settings={"autoencoder": TunedSettings()})
    with pytest.raises(ValueError, match="Received: 'clip'"):
        BuildOptions(settings={"clip": TunedSettings()})


# -- the recipe: a new approach is one module plus one registry line ----------------------------------

@dataclasses.dataclass(frozen=True)
class HistogramSettings:
    """How many bins per colour channel."""

    bins: int = 8

    def __post_init__(self):
        if not 2 <= self.bins <= 32:
            raise ValueError(f"`bins` must be in [2, 32]. Received: bins={self.bins}")


class HistogramExtractor:
    """Per-channel colour histograms, concatenated and unit-normalised."""

    image_size = 32

    def __init__(self, bins):
        self.bins, self.dim = bins, 3 * bins
        self.name, self.fingerprint, self.options = f"histogram{bins}", f"histogram-v1-{bins}", {"bins": bins}

    def embed(self, batch):
        edges = np.linspace(0, 256, self.bins + 1)
        flat = np.asarray(batch).reshape(len(batch), -1, 3)
        out = np.array([np.concatenate([np.histogram(img[:, c], edges)[0] for c in range(3)]) for img in flat],
                       dtype=np.float32).reshape(len(batch), self.dim)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class Histogram(Approach):
    """A toy approach, as a new module would define it."""

    name, title, settings_type = "histogram", "Colour histogram", HistogramSettings

    def settings_from_manifest(self, catalog):
        try:
            return HistogramSettings(**read_manifest(self.store_dir(catalog))["options"])
        except (ArtifactError, OSError, KeyError, TypeError, ValueError):
            return None

    def load_model(self, catalog, manifest, model_of):
        return HistogramExtractor(manifest["options"]["bins"])

    def build(self, catalog, settings, *, log, progress, learn=True):
        ensure_store(self.name, catalog, HistogramExtractor(settings.bins), log, progress(self.name))


@pytest.fixture
def histogram():
    yield approaches_mod.register(Histogram())  # the one registry line
    approaches_mod.unregister("histogram")


def test_a_new_approach_is_one_module_and_one_registry_line(histogram, shop_dir, tmp_path, capsys):
    from imgsim import Engine
    from imgsim.build import BuildOptions, build, refresh
    from imgsim.cli import main
    from imgsim.ingest.catalog import Catalog
    from imgsim.ingest.changes import add_items

    root = tmp_path / "shop"
    build(str(shop_dir), root, BuildOptions(approaches=("histogram",), settings={"histogram": HistogramSettings(4)}))
    engine = Engine.open(root)
    assert engine.approaches() == ["histogram"] and engine.label("histogram") == "Colour histogram"
    top = engine.search(shop_dir / "greens" / "green_2.png", "histogram", k=3)
    assert set(top.items["category"]) == {"greens"} and top.regions == 1  # searched whole: no feature map
    # added items are embedded by refresh with the settings the store was built with, not the defaults
    new = tmp_path / "new" / "yellows"
    new.mkdir(parents=True)
    Image.fromarray(solid((230, 210, 20), 40)).save(new / "yellow_0.png")
    catalog, _ = add_items(root, str(new.parent))
    assert refresh(catalog) == ["histogram"]
    store = read_manifest(root / "stores" / "histogram")
    assert store["options"] == {"bins": 4} and store["count"] == len(Catalog.load(root).ok) == 13
    # the command line offers it by name, and refuses to retrain what learns nothing
    assert main(["query", str(root), str(new / "yellow_0.png"), "--approach", "histogram", "-k", "1"]) == 0
    assert "Colour histogram" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        main(["train", str(root), "--approach", "histogram"])
    assert refused.value.code == 2 and "invalid choice: 'histogram'" in capsys.readouterr().err
    # and it keeps the same contract as the built-in approaches
    check_approach_contract("histogram", root, HistogramSettings(6))
