"""Catalogues from folders, labels CSVs and the demo package."""

import pandas as pd
import pytest

from imgsim import sources
from imgsim.catalog import Catalog, CatalogError, ingest


def test_folder_catalogue_uses_subfolders_as_categories(shop_dir, tmp_path):
    cat = ingest(str(shop_dir), tmp_path / "cat")
    assert len(cat.items) == 13 and len(cat.ok) == 12
    broken = cat.failures().iloc[0]
    assert broken["status"] == "failed_to_decode" and "not an image" in broken["message"]
    assert sorted(cat.ok["category"].unique()) == ["blues", "greens", "reds"]
    assert (cat.ok["label"] == cat.ok["category"]).all()
    loaded = Catalog.load(tmp_path / "cat")
    pd.testing.assert_frame_equal(loaded.items, cat.items)
    assert loaded.manifest["format_version"] == 1 and loaded.manifest["n_ok"] == 12


def test_ids_are_stable_across_builds(shop_dir, tmp_path):
    a = ingest(str(shop_dir), tmp_path / "a").items["id"].tolist()
    b = ingest(str(shop_dir), tmp_path / "b").items["id"].tolist()
    assert a == b and len(set(a)) == len(a)


def test_labels_csv_is_joined_on_path(shop_dir, tmp_path):
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"path": ["reds/red_0.png", "blues/blue_1.png", "gone/nothing.png"],
                  "id": ["R0", "B1", "X9"], "productDisplayName": ["Crimson tee", "Navy tee", "Ghost"],
                  "articleType": ["Tshirts", "Tshirts", "Socks"]}).to_csv(labels, index=False)
    cat = ingest(str(shop_dir), tmp_path / "cat", labels=labels, label_column="articleType")
    rows = cat.items.set_index("id")
    assert rows.loc["R0", "name"] == "Crimson tee" and rows.loc["R0", "label"] == "Tshirts"
    assert rows.loc["X9", "status"] == "missing_file"
    assert rows.loc["B1", "articleType"] == "Tshirts"


def test_labels_csv_without_path_column_is_refused(shop_dir, tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("file,label\na.png,x\n")
    with pytest.raises(sources.SourceError, match="`path` column"):
        ingest(str(shop_dir), tmp_path / "cat", labels=bad)


def test_missing_source_and_missing_catalogue(tmp_path):
    with pytest.raises(sources.SourceError, match="does not exist"):
        ingest(str(tmp_path / "nowhere"), tmp_path / "cat")
    with pytest.raises(CatalogError, match="no catalogue"):
        Catalog.load(tmp_path / "cat")


def test_flipkart_cells_are_parsed():
    assert sources.parse_category_tree('["Clothing >> Women\'s Clothing >> Shorts"]') == [
        "Clothing", "Women's Clothing", "Shorts"]
    assert sources.parse_list_field('["http://a/1.jpg", "http://a/2.jpg"]') == ["http://a/1.jpg", "http://a/2.jpg"]
    assert sources.parse_list_field("[http://a/1.jpg, http://a/2.jpg]") == ["http://a/1.jpg", "http://a/2.jpg"]
    assert sources.parse_list_field("") == []


def test_flipkart_csv_needs_its_columns(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(sources.SourceError, match="missing column"):
        ingest(str(csv), tmp_path / "cat")


@pytest.mark.skipif(not sources.demo_available(), reason="tuxpaint-stamps-default is not installed")
def test_demo_source_lists_named_stamps_without_symbols():
    specs = sources.from_demo()
    assert len(specs) > 600
    categories = {s.fields["category"] for s in specs}
    assert "symbols" not in categories and {"clothes", "animals", "food"} <= categories
    assert any(s.source.endswith(".svg") for s in specs)
    assert not any(s.fields["name"].endswith("mirror") for s in specs)
    assert all(s.fields["name"] for s in specs)
