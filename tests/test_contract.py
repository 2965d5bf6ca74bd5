"""One contract every approach's model keeps (in the style of keras-hub's shared backbone test).

Each model embeds ``(N, S, S, 3)`` uint8 into ``(N, dim)`` float32 (unit rows where the approach
promises them), reloads from disk to the same vectors, names itself and its fingerprint, and a
store built with it is refused for a model that differs.
"""

import numpy as np
import pytest
from conftest import FakeExtractor

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
    from imgsim.approaches.tuned import TunedExtractor, fit_projection, save_projection
    from imgsim.storage.stores import iter_batches

    base = load_extractor("efficientnet_lite0")
    features = np.concatenate([base.embed(b) for b in iter_batches(catalog.thumb_paths(), 224, 16)])
    labels = catalog.ok["category"].to_numpy()
    save_projection(tmp_path / "tuned", fit_projection(features, labels), base, "category",
                    catalog.ok["id"].tolist(), 0.0)
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
