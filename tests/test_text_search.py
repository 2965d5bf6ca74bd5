"""Words: BM25 over the catalogue's own columns, alone and fused with a photo ("this, but in blue")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("bm25s")

from imgsim import text as text_mod  # noqa: E402 (after the skip)
from imgsim.cli import main  # noqa: E402
from imgsim.engine import Engine  # noqa: E402
from imgsim.index import Hits  # noqa: E402
from imgsim.ingest.catalog import OK, Catalog  # noqa: E402

ROWS = [  # id, name, category, colour, usage, price
    ("a", "Roadster Men Blue Casual Shirt", "Shirts", "Blue", "Casual", 30.0),
    ("b", "Puma Men Grey Tshirts", "Tshirts", "Grey", "Sports", 12.0),
    ("c", "Nike Women Blue T-shirt", "Tshirts", "Navy Blue", "Sports", 20.0),
    ("d", "Levis Men Formal Shirt", "Shirts", "White", "Formal", 45.0),
    ("e", "Wrangler Men Jeans", "Jeans", "Blue", "Casual", 50.0),
    ("f", "Red Sneakers", "Shoes", "Red", "Casual", 60.0),
]


@pytest.fixture
def engine(tmp_path) -> Engine:
    """A catalogue with text columns and no store: words need none."""
    ids, names, categories, colours, usages, prices = zip(*ROWS)
    items = pd.DataFrame({"id": ids, "status": OK, "name": names, "category": categories, "label": categories,
                          "colour": colours, "usage": usages, "price": prices, "sha256": ids, "source": ids,
                          "thumb": [f"thumbs/{i}.png" for i in ids]})
    return Engine(Catalog(tmp_path / "shop", {"source": "test"}, items))


def test_every_text_column_is_searched_and_numbers_are_not(engine):
    index = text_mod.TextIndex(engine.items)
    assert index.columns == ["name", "category", "label", "colour", "usage"]
    assert engine.search_text("formal").ids == ["d"]  # only in `usage` and the name
    assert engine.search_text("navy").ids == ["c"]  # only in `colour`
    assert engine.search_text("45").ids == []  # a price is not a word of the item


def test_bm25_ranks_more_and_rarer_words_first(engine):
    # "blue casual shirt": a has all three words; e (blue, casual) and d (shirt) fewer
    ids = engine.search_text("blue casual shirt", k=6).ids
    assert ids[0] == "a" and set(ids) == {"a", "c", "d", "e", "f"}  # f: casual; b matches none
    scores = engine.search_text("blue casual shirt", k=6).items["score"].to_numpy()
    assert (np.diff(scores) <= 0).all() and (scores > 0).all()
    # "sneaker" is in one item, "men" in four: the rare word decides between one-word matches
    assert engine.search_text("men sneakers", k=6).ids[0] == "f"
    assert set(engine.search_text("tshirt").ids) == {"b", "c"}  # plurals meet: the category "Tshirts"


def test_words_obey_filters_and_refuse_nothing_to_search(engine):
    assert engine.search_text("blue", where=("price<=25",)).ids == ["c"]
    assert engine.search_text("blue", category="Jeans").ids == ["e"]
    assert engine.search_text("zebra").ids == []
    with pytest.raises(ValueError, match="at least one letter or digit. Received: '!!'"):
        engine.search_text("!!")
    with pytest.raises(ValueError, match="no column 'brand'; its columns are: id, name, category"):
        engine.search_text("blue", where=("brand=Nike",))


def test_fusion_brings_the_words_forward_within_the_photos_pool():
    # the photo's pool: grey T-shirts first, blue ones further down, a blue bag last
    rows = np.array([[10, 11, 12, 13, 14]])
    photo = Hits(rows, np.array([[0.95, 0.94, 0.90, 0.88, 0.50]], np.float32), np.array([[0, 1, 0, 2, 1]]))
    words = np.zeros(20, np.float32)
    words[[12, 13, 14]] = [2.0, 2.0, 2.0]  # "blue" in 12, 13 and 14
    hits, photo_scores, text_scores = text_mod.fuse(photo, words, 3)
    assert hits.rows[0].tolist() == [12, 13, 14]  # the blue ones, in the photo's order
    assert hits.regions[0].tolist() == [0, 2, 1]  # each keeps the region that matched
    np.testing.assert_allclose(photo_scores, [0.90, 0.88, 0.50], atol=1e-6)
    np.testing.assert_allclose(text_scores, [2.0, 2.0, 2.0])
    # no word matches anything: the photo's own order
    assert text_mod.fuse(photo, np.zeros(20, np.float32), 5)[0].rows[0].tolist() == rows[0].tolist()
    # distances (lower is closer): the same answer
    distances = Hits(rows, 1.0 - photo.scores)
    assert text_mod.fuse(distances, words, 3, higher_is_closer=False)[0].rows[0].tolist() == [12, 13, 14]
    with pytest.raises(ValueError, match="`weight` must be in"):
        text_mod.fuse(photo, words, 3, weight=1.5)


def test_a_red_photo_plus_blue_gives_blue_items(built_catalog, shop_dir: Path):
    engine = Engine.open(built_catalog)
    photo = shop_dir / "reds" / "red_1.png"
    assert set(engine.search(photo, "pretrained", k=3).items["category"]) == {"reds"}
    result = engine.search(photo, "pretrained", k=3, text="blue")
    assert set(result.items["category"]) == {"blues"} and result.metric == "photo+words"
    assert (result.items["text_score"] > 0).all() and "photo_score" in result.items


def test_cli_words_alone_and_with_a_photo(built_catalog, shop_dir, capsys):
    assert main(["query", str(built_catalog), "--text", "green", "-k", "2", "--json"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    assert answer["photo"] is None and list(answer["approaches"]) == ["words"]
    assert [r["category"] for r in answer["approaches"]["words"]["results"]] == ["greens", "greens"]
    photo = str(shop_dir / "reds" / "red_1.png")
    assert main(["query", str(built_catalog), photo, "--text", "green", "-k", "2", "--json"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    results = answer["approaches"]["pretrained"]["results"]
    assert answer["photo"] == photo and {r["category"] for r in results} == {"greens"}
    assert all(r["text_score"] > 0 for r in results)
    assert main(["query", str(built_catalog)]) == 2
    assert "give at least one PHOTO, or --text WORDS" in capsys.readouterr().err


def test_a_missing_bm25_library_is_one_clear_error(engine, monkeypatch):
    import sys

    from imgsim.errors import ImgsimError

    monkeypatch.setitem(sys.modules, "bm25s", None)  # as if it were not installed
    with pytest.raises(ImgsimError, match="searching words needs the bm25s package, which is not installed"):
        engine.search_text("blue")
