"""Embedding stores: round trip, refusal after a model change, crash safety, resume."""

import numpy as np
import pytest
from conftest import FakeExtractor

from imgsim.ingest.catalog import ingest
from imgsim.storage.artifacts import ArtifactError
from imgsim.storage.stores import Store, StoreMismatchError, build_store, model_spec, store_path


@pytest.fixture
def catalog(shop_dir, tmp_path):
    return ingest(str(shop_dir), tmp_path / "cat")


def test_round_trip(catalog):
    ex = FakeExtractor()
    build_store(catalog, "fake", ex, batch_size=5, chunk_rows=5)
    loaded = Store.load(store_path(catalog, "fake"), catalog, model_spec("fake", ex))
    assert loaded.embeddings.shape == (12, 4)
    np.testing.assert_array_equal(loaded.ids, catalog.ok["id"].to_numpy())
    expected = ex.embed(np.stack([catalog.load_square(i, 8) for i in range(12)]))
    np.testing.assert_allclose(loaded.embeddings, expected, atol=1e-6)
    assert isinstance(loaded.embeddings, np.memmap)
    assert loaded.manifest["dim"] == 4 and loaded.manifest["count"] == 12


def test_a_store_is_refused_for_another_model(catalog):
    build_store(catalog, "fake", FakeExtractor("v1"))
    with pytest.raises(StoreMismatchError, match="fingerprint='v1'.*fingerprint='v2'.*rebuild"):
        Store.load(store_path(catalog, "fake"), catalog, model_spec("fake", FakeExtractor("v2")))


def test_a_crash_mid_build_keeps_the_previous_store_and_resumes(catalog):
    build_store(catalog, "fake", FakeExtractor("v1"), batch_size=4, chunk_rows=4)
    before = np.array(Store.load(store_path(catalog, "fake")).embeddings)
    with pytest.raises(RuntimeError, match="power cut"):
        build_store(catalog, "fake", FakeExtractor("v2", fail_after=2), batch_size=4, chunk_rows=4)
    survivor = Store.load(store_path(catalog, "fake"))
    assert survivor.manifest["fingerprint"] == "v1"
    np.testing.assert_array_equal(survivor.embeddings, before)
    resumed = FakeExtractor("v2")
    build_store(catalog, "fake", resumed, batch_size=4, chunk_rows=4)
    assert resumed.calls == 1  # two of three chunks were kept from the interrupted run
    assert Store.load(store_path(catalog, "fake")).manifest["fingerprint"] == "v2"


def test_damaged_or_missing_store(catalog, tmp_path):
    with pytest.raises(ArtifactError, match="manifest"):
        Store.load(tmp_path / "nothing")


def test_a_rebuild_embeds_only_new_and_changed_items(catalog):
    first = FakeExtractor("v1")
    build_store(catalog, "fake", first, batch_size=4)
    assert first.calls == 3
    before = np.array(Store.load(store_path(catalog, "fake")).embeddings)
    # the same catalogue with one item's image changed and the last item gone
    changed = catalog.ok.iloc[:-1].copy()
    for column in ("source", "sha256"):  # what a row's key is made of
        if column in changed:
            changed.loc[0, column] = changed.loc[0, column] + "2"
    catalog.__dict__["ok"] = changed.reset_index(drop=True)
    catalog.__dict__["fingerprint"] = "changed"
    again = FakeExtractor("v1")
    store = build_store(catalog, "fake", again, batch_size=4)
    assert again.calls == 1 and store.manifest["reused_rows"] == 10
    np.testing.assert_array_equal(store.embeddings[1:], before[1:11])
    other = FakeExtractor("v2")  # another model reuses nothing
    assert build_store(catalog, "fake", other, batch_size=4).manifest["reused_rows"] == 0


def test_a_chunk_embedded_for_other_rows_is_never_used(catalog, tmp_path):
    """A kill left a partial chunk of new rows and no store: the next build must not read it as row 0."""
    import shutil

    from PIL import Image

    from imgsim.ingest.changes import add_items

    build_store(catalog, "fake", FakeExtractor(), batch_size=1, chunk_rows=1)
    extra = []
    for i, colour in enumerate([(250, 250, 0), (0, 250, 250)]):
        extra.append(str(tmp_path / f"extra_{i}.png"))
        Image.fromarray(np.full((20, 20, 3), colour, np.uint8)).save(extra[-1])
    grown, _ = add_items(catalog.root, extra)
    with pytest.raises(RuntimeError, match="power cut"):  # the first new row's chunk is saved
        build_store(grown, "fake", FakeExtractor(fail_after=1), batch_size=1, chunk_rows=1)
    gone = store_path(grown, "fake")  # and the store is gone, as a kill in the old two-rename swap left it
    target = gone.resolve()
    if gone.is_symlink():
        gone.unlink()
    shutil.rmtree(target)
    store = build_store(grown, "fake", FakeExtractor(), batch_size=1, chunk_rows=1)
    expected = np.concatenate([FakeExtractor().embed(np.stack([grown.load_square(i, 8)]))
                               for i in range(len(grown.ok))])
    np.testing.assert_allclose(np.asarray(store.embeddings), expected)
