"""Both autoencoder variants: shapes, parameter counts, a falling loss, a faithful reload."""

import numpy as np
import pytest

from imgsim.autoencoder import Autoencoder, AutoencoderConfig, build_conv, build_seed, train


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


def test_training_lowers_the_loss_and_reloads_identically(tmp_path):
    rng = np.random.default_rng(0)
    images = np.zeros((12, 16, 16, 3), np.uint8)
    for i in range(12):
        images[i, :, :] = rng.integers(0, 256, 3)
        images[i, 4:12, 4:12] = 255 - images[i, 0, 0]
    config = AutoencoderConfig(image_size=16, latent_dim=8, epochs=6, batch_size=4, patience=6,
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
