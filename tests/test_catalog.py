"""Catalogues from folders, labels CSVs and the demo package."""

import json
import os
import shutil

import pandas as pd
import pytest
from conftest import make_shop

from imgsim.ingest import catalog, changes, sources
from imgsim.ingest.catalog import Catalog, CatalogError, ingest


def test_folder_catalogue_uses_subfolders_as_categories(shop_dir, tmp_path):
    cat = ingest(str(shop_dir), tmp_path / "cat")
    assert len(cat.items) == 13 and len(cat.ok) == 12
    broken = cat.failures().iloc[0]
    assert broken["status"] == "failed_to_decode" and "not an image" in broken["message"]
    assert sorted(cat.ok["category"].unique()) == ["blues", "greens", "reds"]
    assert (cat.ok["label"] == cat.ok["category"]).all()
    loaded = Catalog.load(tmp_path / "cat")
    pd.testing.assert_frame_equal(loaded.items, cat.items)
    assert loaded.manifest["format_version"] == catalog.FORMAT_VERSION and loaded.manifest["n_ok"] == 12


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
    with pytest.raises(catalog.CatalogNotFoundError, match="no catalogue") as missing:
        Catalog.load(tmp_path / "cat")
    assert missing.value.root == tmp_path / "cat" and "imgsim build" not in str(missing.value)


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


# --- Issue 14: what a source may point at, strict CSVs, content hashes, crash safety.


def test_labels_paths_must_stay_inside_the_folder(shop_dir, tmp_path):
    for bad in ("../outside.png", "/etc/passwd", "reds/../../x.png"):
        labels = tmp_path / "labels.csv"
        labels.write_text(f"path,label\nreds/red_0.png,a\n{bad},b\n")
        with pytest.raises(sources.SourceError, match="line 3: `path` must stay inside"):
            ingest(str(shop_dir), tmp_path / "cat", labels=labels)


def test_a_labels_csv_listing_a_path_twice_names_both_lines(shop_dir, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nreds/red_0.png,a\nblues/blue_0.png,b\n./reds/red_0.png,c\n")
    with pytest.raises(sources.SourceError, match="same path on lines 2 and 4"):
        ingest(str(shop_dir), tmp_path / "cat", labels=labels)


def test_errors_never_echo_a_files_contents(shop_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGSIM_TEST_SECRET", "hunter2-do-not-show")
    for labels in ("/proc/self/environ", "/etc/passwd"):
        with pytest.raises(sources.SourceError) as info:
            ingest(str(shop_dir), tmp_path / "cat", labels=labels)
        assert "hunter2" not in str(info.value) and "root:" not in str(info.value)
        assert "\n" not in str(info.value)


@pytest.mark.timeout(30)
def test_a_labels_csv_that_is_a_device_or_fifo_is_refused(shop_dir, tmp_path):
    os.mkfifo(tmp_path / "labels.csv")
    for labels, words in ((tmp_path / "labels.csv", "FIFO"), ("/dev/zero", "device")):
        with pytest.raises(sources.SourceError, match=words):
            ingest(str(shop_dir), tmp_path / "cat", labels=labels)


FLIPKART_HEADER = "uniq_id,product_name,product_category_tree,image,brand\n"


@pytest.mark.parametrize("row, words", [
    ('p2,Shirt,"[""A >> B""]",[],Acme,EXTRA\n', "line 3 has 6 fields but the header has 5"),
    ("p2,Shirt,x\n", "line 3 has 3 fields"),
])
def test_a_flipkart_row_with_extra_or_missing_fields_names_its_line(tmp_path, row, words):
    csv = tmp_path / "shop.csv"
    csv.write_text(FLIPKART_HEADER + 'p1,Dress,"[""A >> B""]",[],Acme\n' + row)
    with pytest.raises(sources.SourceError, match=words):
        ingest(str(csv), tmp_path / "cat")


def test_a_quoted_multiline_field_is_one_row(tmp_path):
    csv = tmp_path / "shop.csv"
    csv.write_text(FLIPKART_HEADER + 'p1,"Dress,\nlong",[],[],Acme\np2,Shirt,[],[],Acme,oops\n')
    with pytest.raises(sources.SourceError, match="line 4 has 6 fields"):
        sources.from_flipkart_csv(csv)


@pytest.fixture
def csv_shop(tmp_path, shop_dir):
    """A CSV beside its images, with every kind of image cell."""
    folder = tmp_path / "shop"
    shutil.copytree(shop_dir, folder)
    outside = tmp_path / "private"
    outside.mkdir()
    shutil.copy(shop_dir / "blues" / "blue_0.png", outside / "secret.png")
    os.symlink(outside / "secret.png", folder / "link.png")
    cells = {"rel": "reds/red_0.png", "dotdot": "../private/secret.png",
             "abs": str(outside / "secret.png"), "file": f"file://{outside / 'secret.png'}",
             "ftp": "ftp://example.test/a.png", "link": "link.png", "passwd": "/etc/passwd"}
    rows = [f'{key},{key},"[""X >> Y""]",{cell},Acme' for key, cell in cells.items()]
    (folder / "products.csv").write_text(FLIPKART_HEADER + "\n".join(rows) + "\n")
    return folder / "products.csv", outside


def test_csv_image_paths_stay_in_the_csv_folder_unless_roots_are_listed(csv_shop, tmp_path, monkeypatch):
    csv, outside = csv_shop
    monkeypatch.delenv("IMGSIM_LOCAL_ROOTS", raising=False)
    cat = ingest(str(csv), tmp_path / "cat")
    rows = cat.items.set_index("id")
    assert rows.loc["rel", "status"] == "ok"
    for key in ("dotdot", "abs", "file", "ftp", "link", "passwd"):
        assert rows.loc[key, "status"] == "refused", key
        assert rows.loc[key, "message"].startswith("line "), key
    assert "IMGSIM_LOCAL_ROOTS" in rows.loc["abs", "message"]
    assert "IMGSIM_LOCAL_ROOTS" in rows.loc["passwd", "message"]

    monkeypatch.setenv("IMGSIM_LOCAL_ROOTS", str(outside))
    rows = ingest(str(csv), tmp_path / "cat2").items.set_index("id")
    assert (rows.loc["abs", "status"], rows.loc["file", "status"]) == ("ok", "ok")
    assert rows.loc["passwd", "status"] == "refused"  # /etc is still not a listed root
    assert rows.loc["dotdot", "status"] == "refused"  # relative paths stay in the CSV's folder


@pytest.mark.timeout(60)
def test_one_bad_file_never_stops_a_folder_build(tmp_path):
    shop = make_shop(tmp_path / "shop", per_class=2)
    os.mkfifo(shop / "reds" / "pipe.jpg")
    os.symlink("/dev/zero", shop / "reds" / "zero.jpg")
    os.symlink("/etc/passwd", shop / "reds" / "passwd.jpg")
    (shop / "reds" / "ghost.eps.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n{ } loop\n")
    (shop / "reds" / "loop.svg").write_bytes(
        b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
        b'<g id="a"><use xlink:href="#a"/></g></svg>')
    cat = ingest(str(shop), tmp_path / "cat")
    status = dict(zip(cat.items["path"], zip(cat.items["status"], cat.items["message"])))
    assert len(cat.ok) == 6
    assert status["reds/pipe.jpg"][0] == "refused" and "FIFO" in status["reds/pipe.jpg"][1]
    assert status["reds/zero.jpg"][0] == "refused"  # a link out of the folder (to a device)
    assert status["reds/passwd.jpg"][0] == "refused" and "IMGSIM_LOCAL_ROOTS" in status["reds/passwd.jpg"][1]
    assert status["reds/ghost.eps.jpg"][0] == "failed_to_decode"
    assert "PostScript" in status["reds/ghost.eps.jpg"][1]
    assert status["reds/loop.svg"][0] == "failed_to_rasterize"
    assert Catalog.load(tmp_path / "cat").manifest["status_counts"]["refused"] == 3


def test_a_changed_file_is_noticed_and_changes_the_fingerprint(tmp_path):
    shop = make_shop(tmp_path / "shop", per_class=2)
    first = ingest(str(shop), tmp_path / "cat")
    assert first.ok["sha256"].str.fullmatch("[0-9a-f]{64}").all()
    target = shop / "greens" / "green_0.png"
    shutil.copy(shop / "reds" / "red_0.png", target)  # same name, different picture
    second = ingest(str(shop), tmp_path / "cat")
    assert second.manifest["n_up_to_date"] == len(second.items) - 2  # the changed one, the broken one
    old = first.ok.set_index("path").loc["greens/green_0.png"]
    new = second.ok.set_index("path").loc["greens/green_0.png"]
    assert new["sha256"] != old["sha256"] and new["thumb"] != old["thumb"]
    assert second.fingerprint != first.fingerprint
    assert Catalog.load(tmp_path / "cat").fingerprint == second.fingerprint
    assert not (tmp_path / "cat" / old["thumb"]).exists()  # the stale thumbnail is gone
    red = second.load_square(int(second.ok.index[second.ok["path"] == "greens/green_0.png"][0]), 8)
    assert red[4, 4, 0] > 150 and red[4, 4, 1] < 100


def test_a_kill_between_the_items_table_and_the_manifest_leaves_the_old_catalogue(tmp_path, monkeypatch):
    shop = make_shop(tmp_path / "shop", per_class=2)
    first = ingest(str(shop), tmp_path / "cat")
    shutil.copy(shop / "reds" / "red_0.png", shop / "blues" / "blue_1.png")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed after the items table was written")

    monkeypatch.setattr(catalog, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        ingest(str(shop), tmp_path / "cat")
    monkeypatch.undo()
    assert len(list((tmp_path / "cat").glob("items-*.parquet"))) == 2  # the new one was written
    survivor = Catalog.load(tmp_path / "cat")
    assert survivor.fingerprint == first.fingerprint
    pd.testing.assert_frame_equal(survivor.items, first.items)
    assert all(p.is_file() for p in survivor.thumb_paths())  # its thumbnails are all still there
    again = ingest(str(shop), tmp_path / "cat")
    assert again.fingerprint != first.fingerprint
    assert [p.name for p in (tmp_path / "cat").glob("items-*.parquet")] == [again.manifest["items_file"]]
    assert Catalog.load(tmp_path / "cat").fingerprint == again.fingerprint


def test_a_reader_racing_a_commit_reads_the_new_table(shop_dir, tmp_path, monkeypatch):
    """The writer replaced the table between the reader's manifest read and its table read."""
    root = tmp_path / "cat"
    built = ingest(str(shop_dir), root)
    real = Catalog._read_manifest
    stale = {**built.manifest, "items_file": "items-0123456789abcdef.parquet"}  # deleted by the commit
    reads = []

    def racing(path):
        reads.append(path)
        return stale if len(reads) == 1 else real(path)

    monkeypatch.setattr(Catalog, "_read_manifest", staticmethod(racing))
    assert Catalog.load(root).fingerprint == built.fingerprint
    monkeypatch.setattr(Catalog, "_read_manifest", staticmethod(lambda path: stale))  # truly missing
    with pytest.raises(catalog.CatalogOutdatedError, match="is missing"):
        Catalog.load(root)


def test_an_old_format_catalogue_asks_for_a_rebuild_and_a_build_replaces_it(shop_dir, tmp_path):
    root = tmp_path / "cat"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"kind": "catalog", "format_version": 1}))
    pd.DataFrame({"id": ["x"]}).to_parquet(root / "items.parquet")
    with pytest.raises(catalog.CatalogOutdatedError, match="built again from its source") as refused:
        Catalog.load(root)
    assert refused.value.root == root and "imgsim build" not in str(refused.value)  # the CLI adds the command
    cat = ingest(str(shop_dir), root)
    assert len(cat.ok) == 12 and not (root / "items.parquet").exists()


def test_a_directory_holding_another_artifact_is_left_alone(shop_dir, tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"kind": "embedding_store"}))
    with pytest.raises(CatalogError, match="not a catalogue"):
        ingest(str(shop_dir), root)


# -- duplicate ids are refused at add time, as at build time, before anything is committed -------

def _committed(root):
    return json.loads((root / "manifest.json").read_text())["items_file"]


def test_add_refuses_a_csv_that_repeats_an_id_naming_it(shop_dir, tmp_path):
    cat = ingest(str(shop_dir), tmp_path / "cat")
    folder = tmp_path / "more"
    shutil.copytree(shop_dir / "reds", folder)
    rows = [f'p7,Dress {i},"[""X >> Y""]",red_{i}.png,Acme' for i in range(3)] + ['p8,Shirt,[],red_3.png,Acme']
    (folder / "more.csv").write_text(FLIPKART_HEADER + "\n".join(rows) + "\n")
    with pytest.raises(sources.SourceError, match=r"ids must be unique.*p7 \(3 times") as refused:
        changes.add_items(cat.root, str(folder / "more.csv"))
    assert "p8" not in str(refused.value)
    assert _committed(cat.root) == cat.manifest["items_file"]  # nothing was committed
    assert len(list((cat.root / "thumbs").iterdir())) == len(cat.ok)  # nor anything read


def test_add_refuses_two_image_files_of_the_same_name(shop_dir, tmp_path):
    cat = ingest(str(shop_dir), tmp_path / "cat")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(shop_dir / "blues" / f"blue_{folder == 'b':d}.png", tmp_path / folder / "photo.png")
    files = [str(tmp_path / "a" / "photo.png"), str(tmp_path / "b" / "photo.png")]
    with pytest.raises(sources.SourceError, match="ids must be unique") as refused:
        changes.add_items(cat.root, files)
    assert "a/photo.png" in str(refused.value) and "b/photo.png" in str(refused.value)
    assert _committed(cat.root) == cat.manifest["items_file"]
    added, counts = changes.add_items(cat.root, files[:1])  # one of them alone is added
    assert counts["added"] == 1 and added.items["id"].is_unique
