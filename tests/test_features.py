"""EfficientNet-Lite0: the settings that look plausible when wrong, and real predictions."""

import numpy as np
import pytest
from PIL import Image

from imgsim.approaches import features
from imgsim.approaches.features import (
    ExtractorOptions,
    ExtractorUnavailableError,
    build_lite_classifier,
    load_extractor,
)


@pytest.fixture(scope="module")
def classifier():
    return build_lite_classifier()[0]


@pytest.fixture(scope="module")
def extractor():
    return load_extractor("efficientnet_lite0")


def centre_crop(rgb):
    im = Image.fromarray(rgb[..., :3])
    w, h = im.size
    s = min(w, h) * 0.875
    im = im.crop(((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2))
    return np.asarray(im.resize((224, 224), Image.Resampling.BICUBIC))


def test_easy_to_get_wrong_settings(classifier):
    rescale = classifier.get_layer("rescale")
    assert rescale.scale == pytest.approx(1 / 128) and rescale.offset == pytest.approx(-127 / 128)
    assert classifier.get_layer("stem_conv").padding == "same"  # TF SAME: extra pixel bottom/right
    assert classifier.get_layer("block1_dwconv").padding == "same"
    bns = [layer for layer in classifier.layers if layer.__class__.__name__ == "BatchNormalization"]
    assert bns and all(layer.epsilon == 1e-3 for layer in bns)
    assert classifier.count_params() == 4_694_024


def test_real_predictions(classifier):
    data = pytest.importorskip("skimage.data")
    batch = np.stack([centre_crop(data.coffee()), centre_crop(data.chelsea())])
    _, logits = classifier.predict_on_batch(batch)
    assert int(np.argmax(logits[0])) == 967  # espresso
    assert int(np.argmax(logits[1])) in range(281, 286)  # a cat


def test_embeddings_are_unit_deterministic_and_batch_independent(extractor):
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    a = extractor.embed(batch)
    assert a.shape == (3, 1280) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, extractor.embed(batch))
    np.testing.assert_allclose(extractor.embed(batch[1:2])[0], a[1], atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        extractor.embed(batch[:, :100])


def test_options_are_recorded_and_change_the_embedding(extractor):
    flipped = load_extractor("efficientnet_lite0", ExtractorOptions(pooling="gem", flip=True))
    assert flipped.options == {"pooling": "gem", "flip": True, "gem_p": 3.0}
    assert extractor.options == {"pooling": "avg", "flip": False}
    x = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    assert not np.allclose(flipped.embed(x), extractor.embed(x))


def test_vgg16_without_weights_says_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(features.Path, "home", lambda: tmp_path)
    with pytest.raises(ExtractorUnavailableError, match="vgg16_weights_tf_dim_ordering_tf_kernels.h5"):
        load_extractor("vgg16_fc1")
    with pytest.raises(ValueError, match="name"):
        load_extractor("resnet")
