"""Hostile numbers on the command line, and approaches that cannot answer (issue 24, causes 3 and 10).

Every number a user types is refused in one line with exit code 2 unless it is finite and in its
stated range; a query or evaluation that no approach can answer says which and why.
"""

import json
import shutil

import pytest

from imgsim.arguments import EPOCHS_RANGE, IMAGE_SIZE_RANGE, K_RANGE, LATENT_DIM_RANGE, MAX_MB_RANGE
from imgsim.cli import _download_config, main, make_parser
from imgsim.ingest.catalog import Catalog
from imgsim.ingest.changes import remove_items
from imgsim.ingest.download import LIMITS, DownloadConfig

# Non-finite, overflowing, fractional and absurd values for each numeric option. Each refusal
# happens while parsing, so the catalogue and photo named need not exist.
HOSTILE_ARGUMENTS = [
    ("ingest", "--timeout", "inf"), ("ingest", "--timeout", "nan"), ("ingest", "--timeout", "-inf"),
    ("ingest", "--timeout", "1e400"), ("ingest", "--timeout", "0"), ("ingest", "--timeout", "86400"),
    ("ingest", "--max-mb", "inf"), ("ingest", "--max-mb", "1e400"), ("ingest", "--max-mb", "0"),
    ("ingest", "--max-mb", "1e6"), ("ingest", "--workers", "0"), ("ingest", "--workers", "1e400"),
    ("ingest", "--workers", "100000"), ("ingest", "--workers", "2.5"), ("ingest", "--retries", "-1"),
    ("ingest", "--retries", "nan"), ("ingest", "--retries", "1000"), ("add", "--timeout", "nan"),
    ("add", "--max-mb", "inf"), ("build", "--image-size", "65536"), ("build", "--latent-dim", "0"),
    ("build", "--epochs", "inf"), ("train", "--image-size", "65536"), ("train", "--image-size", "8"),
    ("train", "--latent-dim", "2000000000"), ("train", "--epochs", "1e400"), ("train", "--epochs", "0"),
    ("query", "-k", "inf"), ("query", "-k", "1e400"), ("query", "-k", "0"), ("query", "-k", "9" * 5000),
    ("query", "-k", "five"), ("evaluate", "-k", "nan"), ("evaluate", "-k", "-3"),
]
POSITIONALS = {"ingest": ["src"], "build": ["src"], "add": ["cat", "src"], "train": ["cat"],
               "query": ["cat", "photo.jpg"], "evaluate": ["cat"]}


@pytest.mark.parametrize("command, option, value", HOSTILE_ARGUMENTS)
def test_each_hostile_number_is_refused_in_one_line(command, option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, *POSITIONALS[command], option, value])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("imgsim: error: argument") and option in err
    assert "\n" not in err and "Traceback" not in err and len(err) < 300
    assert captured.out == ""


def test_numbers_in_range_are_parsed_to_their_kind():
    args = make_parser().parse_args(["ingest", "src", "--timeout", "0.5", "--max-mb", "0.01",
                                     "--workers", "1e1", "--retries", "0"])
    assert (args.timeout, args.max_mb, args.workers, args.retries) == (0.5, 0.01, 10, 0)
    assert isinstance(args.workers, int)
    args = make_parser().parse_args(["train", "cat", "--image-size", str(IMAGE_SIZE_RANGE[1]),
                                     "--latent-dim", "2", "--epochs", "1e3"])
    assert (args.image_size, args.latent_dim, args.epochs) == (IMAGE_SIZE_RANGE[1], 2, 1000)
    assert make_parser().parse_args(["query", "cat", "p", "-k", str(K_RANGE[1])]).k == K_RANGE[1]


def test_the_cli_ranges_are_the_ones_the_library_accepts():
    """The largest download values the CLI takes make a valid DownloadConfig; just past them it refuses."""
    top = make_parser().parse_args([
        "ingest", "src", "--timeout", f"{LIMITS['read_timeout'][1]:g}", "--max-mb", f"{MAX_MB_RANGE[1]:g}",
        "--workers", str(LIMITS["workers"][1]), "--retries", str(LIMITS["retries"][1])])
    config = _download_config(top)
    assert config.max_bytes == LIMITS["max_bytes"][1] and config.workers == LIMITS["workers"][1]
    for field, (_, high) in LIMITS.items():
        with pytest.raises(ValueError, match=field):
            DownloadConfig(**{field: high * 2 + 1})
    assert EPOCHS_RANGE[0] >= 1 and LATENT_DIM_RANGE[0] >= 2 and IMAGE_SIZE_RANGE[0] >= 16


@pytest.mark.parametrize("box, words", [
    ("inf,0,10,10", "finite"), ("1e400,0,10,10", "finite"), ("0,nan,10,10", "finite"),
    ("0,0,10.5,10", "whole number"), ("0,0,99999,10", "<= 448"), ("-5,0,10,10", ">= 0"),
    ("10,0,5,10", "x0 < x1"), ("0,10,10,10", "y0 < y1"), ("0,0,10", "x0,y0,x1,y1"),
    ("a,b,c,d", "whole number"),
])
def test_a_hostile_box_is_refused_in_one_line(box, words, tmp_path, capsys):
    # The box is checked before the catalogue is opened, so none is needed here.
    assert main(["query", str(tmp_path / "nowhere"), "photo.jpg", f"--box={box}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imgsim query: error: `--box`") and words in err
    assert "\n" not in err and "Traceback" not in err


@pytest.fixture
def stale_shop(built_catalog, tmp_path):
    """The built shop after a removal whose refresh never ran (killed, or still running)."""
    root = tmp_path / "shop"
    shutil.copytree(built_catalog, root)
    first = Catalog.load(root).ok["id"].iloc[0]
    assert remove_items(root, [first])[1] == 1  # the catalogue changes; its stores do not
    return root


def test_query_on_stale_stores_says_which_and_why(stale_shop, shop_dir, capsys):
    shop = stale_shop
    photo = str(shop_dir / "blues" / "blue_0.png")
    assert main(["query", str(shop), photo, "--approach", "all"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == ""
    named = {line.split(": error: ")[1].split(" is unavailable: ")[0] for line in lines}
    assert {"pretrained", "autoencoder"} <= named
    assert all(line.startswith("imgsim query: error: ") and " is unavailable: " in line for line in lines)

    assert main(["query", str(shop), photo, "--approach", "all", "--json"]) == 2
    [answer] = json.loads(capsys.readouterr().out)
    assert answer["approaches"] == {} and {"pretrained", "autoencoder"} <= set(answer["unavailable"])
    assert all(answer["unavailable"].values())  # each with its reason

    assert main(["query", str(shop), photo, "--approach", "pretrained"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("imgsim query: error: pretrained is unavailable: ")


def test_evaluate_on_stale_stores_says_which_and_why(stale_shop, capsys):
    shop = stale_shop
    assert main(["evaluate", str(shop)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no header without rows
    assert "pretrained is unavailable: " in captured.err and "autoencoder is unavailable: " in captured.err
    assert main(["evaluate", str(shop), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert {"pretrained", "autoencoder"} <= set(report["unavailable"])


def test_a_fresh_catalogue_reports_what_is_unavailable_beside_its_answers(built_catalog, shop_dir, capsys):
    photo = str(shop_dir / "blues" / "blue_0.png")
    assert main(["query", str(built_catalog), photo, "--approach", "all", "--json", "-k", "1"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    assert set(answer["approaches"]) == {"pretrained", "autoencoder"}
    assert set(answer["unavailable"]) == {"tuned"}
    assert main(["evaluate", str(built_catalog), "--json", "-k", "3", "--approaches", "pretrained"]) == 0
    assert json.loads(capsys.readouterr().out)["unavailable"] == {}
