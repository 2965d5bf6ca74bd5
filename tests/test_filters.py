"""Filters on any column, through the engine and the command line (backends: test_congruence.py)."""

from __future__ import annotations

import csv
import json

import pytest

from imgsim.cli import main
from imgsim.engine import Engine
from imgsim.index.conditions import Condition, FilterError

SIZES = ["S", "M", "L"]


@pytest.fixture(scope="module")
def shop(shop_dir, tmp_path_factory):
    """The shop built (pretrained only) with a labels CSV adding a text and a numeric column."""
    from imgsim.build import BuildOptions, build

    work = tmp_path_factory.mktemp("filters")
    labels = work / "labels.csv"
    paths = sorted(p.relative_to(shop_dir).as_posix() for p in shop_dir.rglob("*.png"))
    with labels.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "size", "price"])
        for i, path in enumerate(paths):
            writer.writerow([path, SIZES[i % 3], 10 * (i + 1)])
    out = work / "shop"
    build(str(shop_dir), out, BuildOptions(approaches=("pretrained",), labels=str(labels)))
    return out


@pytest.fixture(scope="module")
def engine(shop):
    return Engine.open(shop)


def test_k_results_whenever_k_items_pass(engine, shop_dir):
    photo = shop_dir / "reds" / "red_1.png"
    items = engine.items
    for where in (("size=M",), ("price>=40", "price<=90"), ("size=L", "price>=50")):
        passing = set(items["id"][Condition.parse(where[0]).mask(items)
                                  & (Condition.parse(where[-1]).mask(items))])
        result = engine.search(photo, "pretrained", k=3, where=where)
        assert len(result.items) == min(3, len(passing)) and set(result.ids) <= passing
    # a filter that keeps only blues answers a red photo with blues, k of them
    blues = engine.search(photo, "pretrained", k=4, where=("category=blues",))
    assert set(blues.items["category"]) == {"blues"} and len(blues.items) == 4
    # category= keeps working, beside conditions
    both = engine.search(photo, "pretrained", k=5, category="greens", where=("price>=60",))
    assert set(both.items["category"]) == {"greens"} and (both.items["price"].astype(float) >= 60).all()


def test_compare_and_more_like_this_take_conditions(engine, shop_dir):
    answers = engine.compare(shop_dir / "greens" / "green_0.png", k=2, where=("size=S",))
    assert all(set(r.items["size"]) == {"S"} for r in answers.values())
    item = engine.search_item(0, "pretrained", k=20, where=("size=S",))
    assert set(item.items["size"]) == {"S"} and engine.items["id"].iloc[0] not in item.ids


def test_bad_columns_and_values_are_one_clear_error(engine, shop_dir):
    photo = shop_dir / "reds" / "red_1.png"
    with pytest.raises(FilterError, match=r"no column 'colour'; its columns are: id, name, category, .*size, price"):
        engine.search(photo, "pretrained", where=("colour=red",))
    with pytest.raises(ValueError, match="size is not a numeric column"):
        engine.search(photo, "pretrained", where=("size>=2",))
    with pytest.raises(ValueError, match="no item has size = 'XL'"):
        engine.search(photo, "pretrained", where=("size=XL",))
    assert "size" in engine.columns() and "thumb_path" not in engine.columns()


def test_cli_where(shop, shop_dir, capsys):
    photo = str(shop_dir / "blues" / "blue_0.png")
    argv = ["query", str(shop), photo, "-k", "3", "--where", "size=L", "--where", "price<=100", "--json"]
    assert main(argv) == 0
    [answer] = json.loads(capsys.readouterr().out)
    ids = [r["id"] for r in answer["approaches"]["pretrained"]["results"]]
    engine = Engine.open(shop)
    rows = engine.items.set_index("id").loc[ids]
    assert (rows["size"] == "L").all() and (rows["price"].astype(float) <= 100).all() and len(ids) == 3
    assert main(["query", str(shop), photo, photo, "--where", "brand=Acme"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no column 'brand'; its columns are:" in err[0]  # once, not once per photo


def test_the_app_draws_filters_from_the_columns_and_searches_words(shop, shop_dir, tmp_path, monkeypatch):
    import shutil

    from conftest import REPO
    from streamlit.testing.v1 import AppTest

    pytest.importorskip("bm25s")  # the words box
    shutil.copytree(shop, tmp_path / "appdata" / "catalogs" / "shop")
    monkeypatch.setenv("IMGSIM_DATA_DIR", str(tmp_path / "appdata"))
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    size = at.sidebar.selectbox(key="where:size-picker")
    assert size.options == ["Any", "L", "M", "S"]  # choices for a text column
    assert at.sidebar.slider(key="where:price-picker").value == (10.0, 120.0)  # a range for a number
    size.set_value("M").run()
    at.text_input(key="words-picker").set_value("blue").run()  # words alone, filtered
    assert not at.exception, at.exception
    cards = [m.value for m in at.markdown if m.value.startswith("**")]
    items = Engine.open(shop).items
    want = items[(items["category"] == "blues") & (items["size"] == "M")]
    from app_support.text import plain

    assert len(cards) == len(want) == 1 and plain(want["name"].iloc[0]) in cards[0]  # the one blue in M
    at.sidebar.slider(key="where:price-picker").set_value((30.0, 120.0)).run()  # the blue M costs 20
    assert not at.exception and any("no item matches" in i.value.lower() for i in at.info)
