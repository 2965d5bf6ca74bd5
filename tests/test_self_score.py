"""The same bytes score 1 against themselves: a catalogue photo queried whole finds its own item
with cosine 1.000, regions off and on, through the engine and the CLI.

The query's whole-photo vector is made from the catalogue's own thumbnail of the photo (decoded
at 256 px, JPEG, read back as stores read it); it once scored 0.977, from a 448 px decode.
"""

import json

import numpy as np
import pytest
from PIL import Image

import imgsim
from imgsim.cli import main
from imgsim.ingest.images import decode_image, thumbnail


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A JPEG large enough for draft decoding and a PNG, both real photos, and two more items."""
    data = pytest.importorskip("skimage.data")
    folder = tmp_path_factory.mktemp("selfshop")
    Image.fromarray(data.astronaut()).resize((900, 700)).save(folder / "astronaut.jpg", quality=88)
    Image.fromarray(data.chelsea()).save(folder / "chelsea.png")  # 451x300
    Image.fromarray(data.coffee()).resize((300, 200)).save(folder / "coffee.jpg")
    Image.fromarray(data.rocket()).resize((200, 300)).save(folder / "rocket.png")
    return folder


@pytest.fixture(scope="module")
def catalog(photos, tmp_path_factory):
    from imgsim.build import BuildOptions, build

    out = tmp_path_factory.mktemp("selfcat") / "shop"
    build(str(photos), out, BuildOptions(approaches=("pretrained",)))
    return out


@pytest.mark.parametrize("name", ["astronaut.jpg", "chelsea.png"])
@pytest.mark.parametrize("regions", [False, True])
def test_an_items_own_file_scores_one(catalog, photos, name, regions):
    engine = imgsim.Engine.open(catalog)
    own = engine.items.index[engine.items["name"] == name.split(".")[0]][0]
    for query in (photos / name, (photos / name).read_bytes(), imgsim.decode_query(photos / name)):
        result = engine.search(query, "pretrained", k=2, regions=regions)
        assert result.items["row"].iloc[0] == own
        assert result.items["score"].iloc[0] == pytest.approx(1.0, abs=1e-4)
        assert result.items["score"].iloc[1] < 0.99  # the others are not the same photo
    # the square the model saw is the one its store holds
    np.testing.assert_array_equal(result.query_image, engine.catalog.load_square(own, 224))


def test_the_cli_scores_the_same_bytes_one(catalog, photos, capsys):
    assert main(["query", str(catalog), str(photos / "astronaut.jpg"), str(photos / "chelsea.png"),
                 "--json", "-k", "1"]) == 0
    answers = json.loads(capsys.readouterr().out)
    for answer in answers:
        top = answer["approaches"]["pretrained"]["results"][0]
        assert top["name"] in answer["photo"] and top["score"] == pytest.approx(1.0, abs=1e-4)


def test_a_decoded_array_gets_the_thumbnail_its_file_gets(photos):
    """Without the file, a photo of at most 448 px makes the same thumbnail from its pixels."""
    for name in ("chelsea.png", "coffee.jpg"):
        rgb = decode_image(photos / name)
        assert thumbnail(np.array(rgb))[1] == thumbnail(photos / name)[1]
    with pytest.raises(ValueError, match="uint8"):
        thumbnail(np.zeros((10, 10), np.uint8))


def test_regions_still_search_the_448_px_photo(catalog, photos):
    """A cropped or boxed query keeps the photo's own pixels: boxes are in the 448 px decode."""
    engine = imgsim.Engine.open(catalog)
    photo = imgsim.decode_query(photos / "astronaut.jpg")
    assert max(photo.shape[:2]) == 448 and photo.thumbnail is not None
    assert photo[:100].thumbnail is None  # a slice is another picture
    result = engine.search(photo, "pretrained", k=1, box=(0, 0, 200, 200))
    assert result.items["matched_box"].iloc[0] == (0, 0, 200, 200)
