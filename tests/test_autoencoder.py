"""Both autoencoder variants: shapes, parameter counts, a falling loss, a faithful reload, crash-safe resumes."""

import dataclasses
import json

import numpy as np
import pytest

from imgsim.approaches.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    Compositor,
    Mode,
    build_conv,
    build_seed,
    train,
)


def test_seed_variant_matches_the_article():
    model, encoder, decoder = build_seed(256, 16)
    assert model.count_params() == 138_507_923
    assert encoder.get_layer("latent").units == 16
    # the article's bug: conv1 and conv2 feed nothing, so Keras leaves them out of the model
    names = {layer.name for layer in encoder.layers}
    assert "conv3" in names and "conv1" not in names and "conv2" not in names


@pytest.mark.parametrize("size", [16, 64])
def test_conv_variant_shapes(size):
    model, encoder, decoder = build_conv(size, 32)
    assert encoder.output.shape[1:] == (32,)
    assert model.output.shape[1:] == (size, size, 3)
    assert model.count_params() < 3_000_000
    assert decoder.get_layer("decoder_out") is not None


def test_config_is_validated():
    with pytest.raises(ValueError, match="power of two"):
        AutoencoderConfig(image_size=48)
    with pytest.raises(ValueError, match="epochs"):
        AutoencoderConfig(epochs=0)
    # The library refuses what the command line refuses (issue 24: 65536 px asked for 240 GiB).
    for absurd in ({"image_size": 65536}, {"latent_dim": 2_000_000_000}, {"image_size": 64.0},
                   {"batch_size": True}, {"learning_rate": float("nan")}, {"learning_rate": float("inf")}):
        with pytest.raises(ValueError, match=next(iter(absurd))):
            AutoencoderConfig(**absurd)


def test_training_lowers_the_loss_and_reloads_identically(tmp_path):
    rng = np.random.default_rng(0)
    images = np.zeros((12, 16, 16, 3), np.uint8)
    for i in range(12):
        images[i, :, :] = rng.integers(0, 256, 3)
        images[i, 4:12, 4:12] = 255 - images[i, 0, 0]
    config = AutoencoderConfig(mode="plain", image_size=16, latent_dim=8, epochs=6, batch_size=4, patience=6,
                               validation_split=0.25)
    model = train(images, tmp_path / "ae", config)
    history = model.manifest["val_loss_history"]
    assert len(history) >= 2 and min(history[1:]) < history[0]
    reloaded = Autoencoder.load(tmp_path / "ae")
    np.testing.assert_array_equal(model.embed(images), reloaded.embed(images))
    recon, mse, psnr = reloaded.errors(images[:3])
    assert recon.shape == (3, 16, 16, 3) and mse.shape == (3,)
    np.testing.assert_allclose(psnr, 10 * np.log10(1 / mse), rtol=1e-5)
    assert reloaded.manifest["parameters"] == reloaded.model.count_params()


# -- crash safety (issue 14, causes 15 and 16) ------------------------------------------------------

def _tiny_images(n: int = 24, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(3)
    images = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        images[i] = rng.integers(0, 256, 3)
        lo, hi = sorted(rng.integers(2, size - 2, 2))
        images[i, lo:hi + 1, lo:hi + 1] = 255 - images[i, 0, 0]
    return images


_TINY = AutoencoderConfig(mode="plain", image_size=16, latent_dim=8, base_filters=8, epochs=5, batch_size=8,
                          patience=5, validation_split=0.25, seed=7)


class _Interrupt:
    """A progress callback that stops training with Ctrl-C after epoch ``after``."""

    def __init__(self, after: int) -> None:
        self.after = after

    def __call__(self, done: int, total: int, message: str) -> None:
        if done == self.after:
            raise KeyboardInterrupt


def _weights(model) -> list[np.ndarray]:
    return model.model.get_weights()


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    images = _tiny_images()
    straight = train(images, tmp_path / "straight", _TINY)
    with pytest.raises(KeyboardInterrupt):
        train(images, tmp_path / "resumed", _TINY, progress=_Interrupt(2))
    assert not (tmp_path / "resumed").exists()
    resumed = train(images, tmp_path / "resumed", _TINY)
    for a, b in zip(_weights(straight), _weights(resumed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    m = resumed.manifest
    assert m["resumed_from_epoch"] == 2 and m["checkpoint_discarded"] is None
    assert m["epochs_trained"] == straight.manifest["epochs_trained"] == len(m["val_loss_history"]) == 5
    np.testing.assert_allclose(m["val_loss_history"], straight.manifest["val_loss_history"], rtol=1e-5)
    assert straight.manifest["resumed_from_epoch"] is None
    assert not (tmp_path / ".resumed.work").exists()  # the work directory goes once the model is saved


def test_a_damaged_checkpoint_is_discarded_and_training_starts_clean(tmp_path):
    images = _tiny_images()
    config = dataclasses.replace(_TINY, epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train(images, tmp_path / "ae", config, progress=_Interrupt(2))
    work = tmp_path / ".ae.work"
    weights = work / "checkpoint" / "weights.npz"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # as a kill mid-write leaves it
    (work / ".checkpoint.tmp-dead").mkdir()  # and a half-written next checkpoint beside it
    (work / ".checkpoint.tmp-dead" / "weights.npz").write_bytes(b"\x89HDF\r\n")
    model = train(images, tmp_path / "ae", config)
    m = model.manifest
    assert m["resumed_from_epoch"] is None and "checksum" in m["checkpoint_discarded"]
    assert m["epochs_trained"] == len(m["val_loss_history"]) == 3
    clean = train(images, tmp_path / "clean", config)
    for a, b in zip(_weights(clean), _weights(model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("damage", ["garbage_state", "missing_file", "old_format"])
def test_any_unusable_work_directory_gives_a_clean_run(tmp_path, damage):
    images = _tiny_images()
    config = dataclasses.replace(_TINY, epochs=2)
    work = tmp_path / ".ae.work"
    if damage == "old_format":  # what Keras' BackupAndRestore left before the checkpoints were ours
        (work / "backup").mkdir(parents=True)
        (work / "backup" / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
        (work / "best.keras").write_bytes(b"PK\x03\x04")
        (work / "manifest.json").write_text(json.dumps({"kind": "autoencoder_work", "config": config.as_dict()}))
    else:
        with pytest.raises(KeyboardInterrupt):
            train(images, tmp_path / "ae", config, progress=_Interrupt(1))
        if damage == "garbage_state":
            (work / "checkpoint" / "state.json").write_text("{not json")
        else:
            (work / "checkpoint" / "optimizer.npz").unlink()
    model = train(images, tmp_path / "ae", config)
    assert model.manifest["epochs_trained"] == 2 and model.manifest["resumed_from_epoch"] is None
    assert (model.manifest["checkpoint_discarded"] is None) == (damage == "old_format")


def test_a_checkpoint_of_other_data_is_not_resumed(tmp_path):
    images = _tiny_images()
    config = dataclasses.replace(_TINY, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train(images, tmp_path / "ae", config, progress=_Interrupt(1))
    model = train(images[::-1].copy(), tmp_path / "ae", config)
    assert model.manifest["resumed_from_epoch"] is None and model.manifest["epochs_trained"] == 2


# -- the background-robust mode (issue 13 section 4) ------------------------------------------------

def _products(n: int = 24, size: int = 16) -> np.ndarray:
    """Coloured blocks on a white studio background, so they can be cut out."""
    rng = np.random.default_rng(5)
    images = np.full((n, size, size, 3), 255, np.uint8)
    for i in range(n):
        lo, hi = sorted(rng.integers(2, size - 2, 2))
        images[i, lo:hi + 2, 3:size - 3] = rng.integers(0, 200, 3)
    return images


def test_robust_config_is_validated_and_recorded():
    assert AutoencoderConfig().mode is Mode.ROBUST  # the default, chosen on the phone-photo benchmark
    config = AutoencoderConfig(mode="robust")
    assert config.mode is Mode.ROBUST and config.as_dict()["mode"] == "robust"
    with pytest.raises(ValueError, match="clean_fraction"):
        AutoencoderConfig(clean_fraction=1.0)
    with pytest.raises(ValueError, match="composite_scale"):
        AutoencoderConfig(composite_scale=0.5)
    with pytest.raises(ValueError):
        AutoencoderConfig(mode="photoshop")


def test_compositor_makes_seeded_phone_photos_at_the_input_size():
    images = _products(6)
    compositor = Compositor(images, seed=1)
    a = compositor.inputs(np.arange(6), np.random.default_rng(9), clean_fraction=0.0)
    b = compositor.inputs(np.arange(6), np.random.default_rng(9), clean_fraction=0.0)
    assert a.shape == images.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)  # a function of the generator's state
    assert np.abs(a.astype(int) - images).mean() > 10  # the scene replaced the studio white
    clean = compositor.inputs(np.arange(6), np.random.default_rng(9), clean_fraction=0.999)
    np.testing.assert_array_equal(clean, images)
    boxed = compositor.inputs(np.arange(6), np.random.default_rng(9), 0.0, box_fraction=1.0)
    assert boxed.shape == images.shape and np.any(boxed != a)  # cropped to the product's box
    with pytest.raises(ValueError, match="box_fraction"):
        AutoencoderConfig(box_fraction=1.5)


def test_robust_training_saves_reloads_and_resumes_exactly(tmp_path):
    images = _products()
    config = dataclasses.replace(_TINY, mode="robust", epochs=3)
    straight = train(images, tmp_path / "straight", config)
    m = straight.manifest
    assert m["config"]["mode"] == "robust" and m["val_photo_mse"] > 0
    reloaded = Autoencoder.load(tmp_path / "straight")
    assert reloaded.mode is Mode.ROBUST and reloaded.options == {"variant": "conv", "mode": "robust"}
    np.testing.assert_array_equal(straight.embed(images), reloaded.embed(images))
    with pytest.raises(KeyboardInterrupt):
        train(images, tmp_path / "resumed", config, progress=_Interrupt(1))
    resumed = train(images, tmp_path / "resumed", config)
    assert resumed.manifest["resumed_from_epoch"] == 1
    for a, b in zip(_weights(straight), _weights(resumed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def add_yellows(root, tmp_path, n):
    """Adds ``n`` yellow squares to the catalogue at ``root`` and refreshes its stores (no retraining)."""
    from conftest import solid
    from PIL import Image

    from imgsim.build import refresh
    from imgsim.ingest.changes import add_items

    folder = tmp_path / "new" / "yellows"
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(solid((230, 210, 20 + i), 40)).save(folder / f"yellow_{i}.png")
    catalog, _ = add_items(root, str(folder.parent))
    refresh(catalog)
    return catalog


def test_drift_advises_retraining_after_many_additions_and_retrain_clears_it(built_catalog, tmp_path):
    import shutil

    from imgsim import approaches
    from imgsim.build import BuildOptions, retrain

    root = tmp_path / "shop"
    shutil.copytree(built_catalog, root)
    approach = approaches.get("autoencoder")
    before = Autoencoder.load(root / "models" / "autoencoder")
    catalog = add_yellows(root, tmp_path, 4)
    model = Autoencoder.load(root / "models" / "autoencoder")
    assert model.fingerprint == before.fingerprint  # the refresh embedded them with the model as it was
    drift = approach.drift(catalog, model)
    assert drift.needs_retrain and drift.approach == "autoencoder"  # 4 of 16 new: more than 20%
    assert drift.line.startswith("autoencoder: 4 of 16 items added since it was trained")
    assert "reconstruction MSE" in drift.line and "python" not in drift.line
    tiny = AutoencoderConfig(image_size=16, latent_dim=8, epochs=1)
    retrain(catalog, "autoencoder", BuildOptions(settings={"autoencoder": tiny}))
    model = Autoencoder.load(root / "models" / "autoencoder")
    assert model.manifest["config"] == tiny.as_dict() and model.fingerprint != before.fingerprint
    after = approach.drift(catalog, model)
    assert not after.needs_retrain and after.line.startswith("autoencoder: 0 of 16 items added")


# -- the retrieval term (issue 23 part 3) -----------------------------------------------------------

def test_retrieval_settings_are_validated_and_recorded_and_old_manifests_still_load():
    config = AutoencoderConfig(contrastive_weight=0.25, temperature=0.2, photo_weight=0.0)
    saved = config.as_dict()
    assert (saved["contrastive_weight"], saved["temperature"], saved["photo_weight"]) == (0.25, 0.2, 0.0)
    assert AutoencoderConfig.from_manifest(saved) == config
    for bad in ({"contrastive_weight": -0.1}, {"contrastive_weight": float("nan")}, {"contrastive_weight": "1"},
                {"temperature": 0.0}, {"temperature": 2.0}, {"photo_weight": True}):
        name, value = next(iter(bad.items()))
        with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}={value!r}"):
            AutoencoderConfig(**bad)
    # A manifest written before the retrieval term existed: its model was trained without one.
    old = {k: v for k, v in AutoencoderConfig(mode="robust").as_dict().items()
           if k not in ("contrastive_weight", "temperature", "photo_weight")}
    assert AutoencoderConfig.from_manifest(old).contrastive_weight == 0.0
    assert AutoencoderConfig.from_manifest({**old, "contrastive_weight": 0.5}).contrastive_weight == 0.5


def test_an_old_manifest_without_the_retrieval_settings_still_loads(tmp_path):
    from imgsim.approaches.autoencoder import AutoencoderApproach
    from imgsim.storage.artifacts import sha256_file

    config = dataclasses.replace(_TINY, epochs=1)
    model = train(_tiny_images(), tmp_path / "models" / "autoencoder", config)
    manifest_path = tmp_path / "models" / "autoencoder" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for key in ("contrastive_weight", "temperature", "photo_weight"):
        del manifest["config"][key]
    manifest_path.write_text(json.dumps(manifest))
    reloaded = Autoencoder.load(tmp_path / "models" / "autoencoder")
    assert reloaded.fingerprint == sha256_file(tmp_path / "models" / "autoencoder" / "autoencoder.keras")
    np.testing.assert_array_equal(reloaded.embed(_tiny_images()[:4]), model.embed(_tiny_images()[:4]))

    class _Catalog:
        root = tmp_path

    approach = AutoencoderApproach()
    approach.model_dir = lambda catalog: catalog.root / "models" / "autoencoder"
    settings = approach.settings_from_manifest(_Catalog())
    assert settings is not None and settings.contrastive_weight == 0.0 and settings.image_size == 16


def _relative_photo_distance(embed, images: np.ndarray, photos: np.ndarray) -> float:
    """Mean cosine distance of each photo's latent to its own item's over that to the other items'."""
    def unit(x):
        x = np.asarray(x, np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    distance = 1.0 - unit(embed(photos)) @ unit(embed(images)).T
    own = np.diag(distance)
    others = distance[~np.eye(len(images), dtype=bool)]
    return float(own.mean() / others.mean())


def test_the_retrieval_term_brings_a_photo_nearer_its_own_item(tmp_path):
    images = _products(32)
    config = dataclasses.replace(_TINY, mode="robust", epochs=3, batch_size=8, patience=3, learning_rate=3e-3,
                                 clean_fraction=0.0, contrastive_weight=1.0, validation_split=0.125)
    # Photos the model never trained on: other scenes, another generator than training's.
    photos = Compositor(images, seed=99).inputs(np.arange(len(images)), np.random.default_rng(4), 0.0, 0.5)
    with_term = train(images, tmp_path / "with", config)
    without = train(images, tmp_path / "without", dataclasses.replace(config, contrastive_weight=0.0))
    assert with_term.manifest["config"]["contrastive_weight"] == 1.0
    assert without.manifest["config"]["contrastive_weight"] == 0.0
    assert 0.0 <= with_term.manifest["val_photo_rank1"] <= 1.0
    # Early stopping watches the studio reconstructions, not the total with its noisy retrieval term.
    assert with_term.manifest["val_loss_monitored"] == "val_studio_out_loss"
    # On this data: 0.85 with the term, 0.97 with it weighted 0 (0.87 untrained).
    assert (_relative_photo_distance(with_term.embed, images, photos)
            < _relative_photo_distance(without.embed, images, photos) - 0.05)


def test_the_retrieval_term_is_a_symmetric_infonce_over_the_batch():
    from imgsim.approaches.autoencoder.contrastive import agreement

    rng = np.random.default_rng(2)
    photo, studio = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    unit_p = photo / np.linalg.norm(photo, axis=1, keepdims=True)
    unit_s = studio / np.linalg.norm(studio, axis=1, keepdims=True)
    logits = unit_p @ unit_s.T / 0.2

    def lse(x, axis):
        top = x.max(axis=axis)
        return top + np.log(np.exp(x - np.expand_dims(top, axis)).sum(axis=axis))

    expected = 0.5 * (lse(logits, 1) + lse(logits, 0)) - np.diag(logits)
    np.testing.assert_allclose(agreement(photo, studio, 0.2), expected, rtol=1e-4, atol=1e-5)
    # Scale-free (the latents are normalised) and lowest when each photo points at its own item.
    np.testing.assert_allclose(agreement(3 * photo, studio, 0.2), expected, rtol=1e-4, atol=1e-5)
    assert agreement(2 * studio, studio, 0.2).mean() < expected.mean()


def test_a_plain_model_trained_beside_the_robust_one_is_shown_with_it(built_catalog, tmp_path, monkeypatch):
    import shutil

    from conftest import REPO
    from streamlit.testing.v1 import AppTest

    from imgsim.build import BuildOptions, retrain
    from imgsim.engine import Engine
    from imgsim.ingest.catalog import Catalog

    root = tmp_path / "data" / "catalogs" / "shop"
    shutil.copytree(built_catalog, root)
    assert Engine.open(root).reconstruct(row=0).plain is None  # no plain model beside it yet
    beside = AutoencoderConfig(image_size=16, latent_dim=8, epochs=1, plain_beside=True)
    retrain(Catalog.load(root), "autoencoder", BuildOptions(settings={"autoencoder": beside}))
    plain = Autoencoder.load(root / "models" / "autoencoder_plain")
    assert plain.mode is Mode.PLAIN and plain.manifest["config"]["plain_beside"] is False
    recon = Engine.open(root).reconstruct(row=0)
    assert recon.plain.shape == recon.reconstruction.shape == (16, 16, 3) and recon.plain.dtype == np.uint8
    expected = plain.errors(recon.original[None])[2][0]
    assert recon.plain_psnr == pytest.approx(float(expected), rel=1e-5)
    monkeypatch.setenv("IMGSIM_DATA_DIR", str(tmp_path / "data"))
    page = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    page.switch_page("app_pages/reconstructions.py").run()
    page.main.radio[0].set_value("Browse").run()
    assert not page.exception
    assert any("plain model's reconstruction" in c for img in page.image for c in img.captions)
    # Retrained without it, the stale plain model goes: it would compare with another model.
    retrain(Catalog.load(root), "autoencoder", BuildOptions(settings={"autoencoder": dataclasses.replace(
        beside, plain_beside=False)}))
    assert not (root / "models" / "autoencoder_plain").exists()
    assert Engine.open(root).reconstruct(row=0).plain is None
