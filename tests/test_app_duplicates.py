"""The Duplicates page through AppTest: the groups of a catalogue with known copies, and "keep
this one" only for the holder of the catalogue's edit key (checked again when it is clicked)."""

import re
import shutil

import pytest
from conftest import REPO
from streamlit.testing.v1 import AppTest
from test_duplicates import COPIES, catalog, photos  # noqa: F401 (the catalogue with known copies)

import imgsim

APP = str(REPO / "streamlit_app.py")
PAGE = "app_pages/duplicates.py"


@pytest.fixture(scope="module")
def app_data(catalog, tmp_path_factory):  # noqa: F811 (the imported fixture)
    data = tmp_path_factory.mktemp("dupsapp")
    shutil.copytree(catalog, data / "catalogs" / "dups")
    return data


def open_page(app_data, monkeypatch, **params) -> AppTest:
    monkeypatch.setenv("IMGSIM_DATA_DIR", str(app_data))
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update(params)
    at.run()
    return at.switch_page(PAGE).run()


def groups_shown(at) -> list[set[str]]:
    """Each group's member names, as the image captions show them (unescaped)."""
    headers = [h for h in at.subheader if h.value.startswith("Group ")]
    names = [c.replace("\\", "") for img in at.image for c in img.captions]
    sizes = [int(re.match(r"Group \d+: (\d+) items", h.value).group(1)) for h in headers]
    out, start = [], 0
    for size in sizes:
        out.append(set(names[start:start + size]))
        start += size
    return out


def keep_buttons(at) -> list:
    return [b for b in at.button if str(b.key).startswith("keep-")]


def test_the_groups_are_shown_read_only_to_everyone_without_the_key(app_data, monkeypatch):
    at = open_page(app_data, monkeypatch)
    assert not at.exception, at.exception
    groups = groups_shown(at)
    for copy, original in COPIES.items():
        assert {copy.replace("_", " "), original} in groups, groups
    assert len(groups) == len(COPIES)
    captions = [c.value.replace("\\", "") for c in at.caption]
    assert any("the same bytes as" in c for c in captions)
    assert any("an altered copy (score" in c for c in captions)
    assert any("64×48 px" in c and "25% of the largest's pixels" in c for c in captions)  # the halved rocket
    assert any("113×84 px" in c and "77% of the largest's pixels" in c for c in captions)  # the cropped astronaut
    assert not keep_buttons(at) and any("read-only" in i.value for i in at.info)
    forged = open_page(app_data, monkeypatch, catalog="dups", key="x" * 32)
    assert not forged.exception and not keep_buttons(forged)


def _button_of(at, name: str, items):
    item_id = items.loc[items["name"] == name, "id"].iloc[0]
    return next(b for b in keep_buttons(at) if b.key.endswith(f"-{item_id}"))


def test_keep_this_one_removes_the_others_for_the_key_holder_only(app_data, monkeypatch):
    root = app_data / "catalogs" / "keyed"
    shutil.copytree(app_data / "catalogs" / "dups", root)
    key = imgsim.issue_edit_key(root)
    at = open_page(app_data, monkeypatch, catalog="keyed", key=key)
    assert not at.exception and at.sidebar.selectbox[0].value == "keyed"
    items = imgsim.Catalog.load(root).ok
    n = len(items)
    assert len(keep_buttons(at)) == 2 * len(COPIES)
    # the key changes after the page was drawn: the click is checked again, and refused
    stale = open_page(app_data, monkeypatch, catalog="keyed", key=key)
    new_key = imgsim.issue_edit_key(root)
    _button_of(stale, "coffee", items).click().run()
    assert not stale.exception and any("read-only" in e.value for e in stale.error)
    assert len(imgsim.Catalog.load(root).ok) == n
    # with the current key: the other items of the group are removed, counts follow
    at = open_page(app_data, monkeypatch, catalog="keyed", key=new_key)
    _button_of(at, "chelsea", items).click().run()
    assert not at.exception, at.exception
    assert any("1 removed" in s.value for s in at.success), [s.value for s in at.success]
    left = imgsim.Catalog.load(root).ok
    assert len(left) == n - 1 and "chelsea again" not in set(left["name"]) and "chelsea" in set(left["name"])
    groups = groups_shown(at)
    assert len(groups) == len(COPIES) - 1 and not any("chelsea" in g for g in groups)
    assert any(f"among {n - 1} items" in c.value for c in at.caption)


def test_differences_name_the_smaller_and_the_reshaped_member():
    from app_support.duplicates import describe, differences

    members = [{"width": w, "height": h, "bytes": 2048, "pairs": []} for w, h in ((400, 300), (200, 150), (300, 300))]
    differences(members)
    assert [round(m["share"], 3) for m in members] == [1.0, 0.25, 0.75]
    assert [m["reshaped"] for m in members] == [False, False, True]  # halved keeps the shape; a square crop not
    assert describe(members[1])[0].replace("\\", "") == "200×150 px · 2 KB · 25% of the largest's pixels"
    unknown = {"width": None, "height": None, "bytes": None, "pairs": [
        {"other": "**bold** name", "reason": "same bytes", "score": None, "cosine": 1.0}]}
    differences([unknown])
    assert describe(unknown) == ["original size unknown (not a file on this server)",
                                 "the same bytes as **\\*\\*bold\\*\\* name**"]
