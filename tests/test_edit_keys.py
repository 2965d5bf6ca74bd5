"""Edit keys (who may change an app-built catalogue), the bound on items per upload, and small
catalogues: the engine side of what an anonymous upload may do."""

import json
import shutil

import pytest

import imgsim
from imgsim.storage import edit_keys


@pytest.fixture
def two_catalogs(built_catalog, tmp_path):
    """Two copies of the built shop (a catalogue's key file is all the checks read)."""
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        shutil.copytree(built_catalog, root)
    return a, b


def test_a_key_opens_its_own_catalogue_only(two_catalogs):
    a, b = two_catalogs
    key_a, key_b = imgsim.issue_edit_key(a), imgsim.issue_edit_key(b)
    assert key_a != key_b and len(key_a) >= 32
    assert imgsim.check_edit_key(a, key_a) and imgsim.check_edit_key(b, key_b)
    assert not imgsim.check_edit_key(a, key_b)  # a key of another catalogue
    assert not imgsim.check_edit_key(a, key_a[:-1] + ("x" if key_a[-1] != "x" else "y"))  # a wrong key
    for junk in ("", None, 42, ["k"], "k" * 10_000):
        assert not imgsim.check_edit_key(a, junk)


def test_only_a_salted_hash_is_stored(two_catalogs):
    a, b = two_catalogs
    key = imgsim.issue_edit_key(a)
    imgsim.issue_edit_key(b)
    text = (a / edit_keys.EDIT_KEY_FILE).read_text()
    assert key not in text
    records = [json.loads((root / edit_keys.EDIT_KEY_FILE).read_text()) for root in (a, b)]
    assert records[0]["salt"] != records[1]["salt"]
    assert not list(a.glob(".*.tmp"))  # written through a temporary name


def test_a_new_key_replaces_the_old_one(two_catalogs):
    a, _ = two_catalogs
    old = imgsim.issue_edit_key(a)
    new = imgsim.issue_edit_key(a)
    assert imgsim.check_edit_key(a, new) and not imgsim.check_edit_key(a, old)


def test_an_operator_catalogue_has_no_key_and_opens_for_none(built_catalog, tmp_path):
    assert not imgsim.has_edit_key(built_catalog)
    assert not imgsim.check_edit_key(built_catalog, "anything")
    assert not imgsim.check_edit_key(tmp_path / "nowhere", "anything")


def test_a_damaged_key_file_opens_nothing(two_catalogs):
    a, _ = two_catalogs
    key = imgsim.issue_edit_key(a)
    path = a / edit_keys.EDIT_KEY_FILE
    record = json.loads(path.read_text())
    for damaged in ("{not json", json.dumps({**record, "salt": "zz"}), json.dumps({**record, "n": 2**40}),
                    json.dumps({**record, "kind": "other"}), json.dumps([1])):
        path.write_text(damaged)
        assert not imgsim.check_edit_key(a, key)


def test_no_key_for_a_folder_that_is_no_catalogue(tmp_path):
    with pytest.raises(ValueError, match="catalogue directory"):
        imgsim.issue_edit_key(tmp_path)


def test_too_many_items_are_refused_before_any_download(tmp_path, http_server):
    base, counts = http_server
    before = dict(counts)
    csv = tmp_path / "big.csv"
    csv.write_text("uniq_id,product_name,image\n" + "".join(f"p{i},item {i},{base}/good/{i}.jpg\n"
                                                          for i in range(12)))
    with pytest.raises(imgsim.SourceError, match=r"lists 12 items; at most 10 are accepted") as err:
        imgsim.build_catalog(str(csv), tmp_path / "shop", imgsim.BuildOptions(max_items=10))
    assert "\n" not in str(err.value)
    assert counts == before  # nothing was downloaded
    assert not imgsim.list_catalogs(tmp_path)


def test_add_refuses_too_many_items_and_changes_nothing(built_catalog, tmp_path, shop_dir):
    shop = tmp_path / "shop"
    shutil.copytree(built_catalog, shop)
    before = imgsim.Catalog.load(shop).manifest["items_file"]
    with pytest.raises(imgsim.SourceError, match="at most 3 are accepted"):
        imgsim.add_items(shop, str(shop_dir), max_items=3)
    assert imgsim.Catalog.load(shop).manifest["items_file"] == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_max_items_is_validated(bad):
    with pytest.raises(ValueError, match="Received: max_items="):
        imgsim.BuildOptions(max_items=bad)


def test_a_one_photo_shop_builds_without_the_autoencoder(shop_dir, tmp_path):
    """Once 'images must hold at least 4 images' stopped the build of a 1-3 photo shop."""
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(shop_dir / "reds" / "red_0.png", folder / "red_0.png")
    lines: list[str] = []
    imgsim.build_catalog(str(folder), tmp_path / "cat", log=lines.append)
    engine = imgsim.Engine.open(tmp_path / "cat")
    assert engine.approaches() == ["pretrained"]
    assert any("autoencoder: skipped" in line and "at least 4 images" in line for line in lines), lines


def test_searchable_catalogues_leave_out_empty_ones(built_catalog, tmp_path):
    base = tmp_path / "catalogs"
    shutil.copytree(built_catalog, base / "full")
    empty = tmp_path / "empty-src"
    empty.mkdir()
    (empty / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(imgsim.CatalogError, match="could be ingested"):
        imgsim.build_catalog(str(empty), base / "empty")
    assert [p.name for p in imgsim.list_catalogs(base)] == ["empty", "full"]
    assert [p.name for p in imgsim.searchable_catalogs(base)] == ["full"]
