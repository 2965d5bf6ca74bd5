"""The engine and the command line over a tiny catalogue built with both approaches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgsim.cli import main
from imgsim.engine import Engine

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine(built_catalog):
    return Engine.open(built_catalog)


def test_both_approaches_answer_best_first(engine, shop_dir):
    assert engine.approaches() == ["pretrained", "autoencoder"]
    for approach in engine.approaches():
        result = engine.search(shop_dir / "greens" / "green_2.png", approach, k=3)
        assert len(result.items) == 3 and result.query_image.dtype == np.uint8
        assert (np.diff(result.items["score"]) <= 0).all()  # cosine: best first
    # the pretrained features tell the colours apart; a two-epoch autoencoder need not
    top = engine.search(shop_dir / "greens" / "green_2.png", "pretrained", k=3).items
    assert set(top["category"]) == {"greens"}


def test_more_like_this_excludes_the_item_and_filters(engine):
    result = engine.search_item(0, "pretrained", k=20)
    assert len(result.items) == 11 and engine.items["id"].iloc[0] not in result.ids
    filtered = engine.search_item(0, "pretrained", k=20, category="blues")
    assert set(filtered.items["category"]) == {"blues"}
    with pytest.raises(ValueError, match="category"):
        engine.search_item(0, "pretrained", k=3, category="hats")


def test_compare_and_reconstruct(engine, shop_dir):
    both = engine.compare(shop_dir / "reds" / "red_1.png", k=4)
    assert set(both) == {"pretrained", "autoencoder"}
    recon = engine.reconstruct(row=0)
    assert recon.original.shape == recon.reconstruction.shape == (16, 16, 3)
    assert recon.error_map.shape == (16, 16) and recon.psnr > 0
    errors = engine.reconstruction_errors()
    assert len(errors) == 12 and (errors["mse"] >= 0).all()


def test_tuned_is_unavailable_with_a_reason(engine):
    # the shop's categories repeat, so tuned could apply: it is only not fitted yet, and says so
    assert engine.unavailable()["tuned"] == "not fitted yet for this catalogue"


def test_cli_query_and_evaluate_json(built_catalog, shop_dir, capsys):
    assert main(["query", str(built_catalog), str(shop_dir / "blues" / "blue_0.png"), "-k", "2", "--json",
                 "--approach", "all"]) == 0
    [out] = json.loads(capsys.readouterr().out)
    assert set(out["approaches"]) == {"pretrained", "autoencoder"} and out["error"] is None
    assert [r["name"] for r in out["approaches"]["pretrained"]["results"]][0] == "blue 0"
    assert out["approaches"]["pretrained"]["label"] == "Pretrained CNN (EfficientNet-Lite0)"
    assert main(["evaluate", str(built_catalog), "--json", "-k", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["k"] == 3 and report["n"] == 12 and report["label_column"] == "label"
    assert set(report["pretrained"]) == {"precision@1", "precision@3", "map@3"}
    assert report["pretrained"]["precision@1"] == 1.0  # the three colours are trivially apart


def test_build_again_skips_what_is_up_to_date(built_catalog, shop_dir, capsys):
    assert main(["build", str(shop_dir), "--out", str(built_catalog), "--image-size", "16",
                 "--latent-dim", "8", "--epochs", "2", "--approaches", "pretrained,autoencoder"]) == 0
    out = capsys.readouterr().out
    assert "pretrained: store up to date" in out and "autoencoder: model up to date" in out


@pytest.mark.parametrize("argv, words", [
    (["query", "/nonexistent/catalog", "x.jpg"], "no catalogue"),
    (["evaluate", "/nonexistent/catalog"], "no catalogue"),
    (["build", "/nonexistent/folder"], "does not exist"),
])
def test_bad_input_exits_with_one_line(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err


def test_the_cli_adds_the_command_that_fixes_a_missing_catalogue(tmp_path, capsys):
    """The library's message names no command (browsers read it); the CLI's line ends with one."""
    assert main(["info", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"imgsim info: error: no catalogue at {tmp_path / 'nowhere'}; "
                   f"build one with: python -m imgsim build SOURCE --out {tmp_path / 'nowhere'}")


def test_every_imgsim_error_is_caught_once_and_other_errors_are_bugs(monkeypatch, capsys):
    """Any ImgsimError, a new one included, ends as one line with exit 2; a bug keeps its traceback."""
    from imgsim import cli
    from imgsim.errors import ImgsimError

    class NewError(ImgsimError, RuntimeError):
        pass

    def fail(args):
        raise NewError("the first line\nand the second")

    monkeypatch.setattr(cli, "cmd_list", fail)
    assert main(["list"]) == 2
    assert capsys.readouterr().err == "imgsim list: error: the first line and the second\n"

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_list", bug)
    with pytest.raises(KeyError):
        main(["list"])


def test_add_of_two_files_of_the_same_name_is_one_line(shop_dir, tmp_path, capsys):
    from imgsim.ingest.catalog import ingest

    cat = ingest(str(shop_dir), tmp_path / "cat")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "photo.png").write_bytes((shop_dir / "reds" / "red_0.png").read_bytes())
    assert main(["add", str(cat.root), str(tmp_path / "a" / "photo.png"), str(tmp_path / "b" / "photo.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("imgsim add: error: these image files repeat item ids")
    assert str(tmp_path) not in err  # file names only: messages may reach a browser


def test_unreadable_query_image(built_catalog, samples, capsys):
    assert main(["query", str(built_catalog), str(samples["page.jpg"])]) == 2
    assert "HTML page" in capsys.readouterr().err


def test_batch_query_of_a_folder_and_a_box(built_catalog, shop_dir, capsys):
    """One process answers every photo of a folder; a bad one is reported and the rest answered."""
    assert main(["query", str(built_catalog), str(shop_dir / "reds"), "-k", "1", "--json"]) == 2
    answers = json.loads(capsys.readouterr().out)
    assert len(answers) == 5 and sum(a["error"] is not None for a in answers) == 1
    assert all(a["approaches"]["pretrained"]["results"][0]["category"] == "reds" for a in answers if not a["error"])
    assert main(["query", str(built_catalog), str(shop_dir / "blues" / "blue_1.png"), "--box", "0,0,40,48",
                 "--json"]) == 0
    assert main(["query", str(built_catalog), str(shop_dir / "blues" / "blue_1.png"), "--box", "1,2"]) == 2
    assert "x0,y0,x1,y1" in capsys.readouterr().err


def test_argument_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["query"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imgsim: error:") and "\n" not in err


def _quiet_env() -> dict[str, str]:
    """The environment of a user who set none of TensorFlow's logging variables."""
    import os

    from imgsim._quiet import ENVIRONMENT

    return {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}


NOISE = ("absl", "oneDNN", "tensorflow", "cpu_feature_guard", "I0000", "W0000", "WARNING")


def test_a_bad_photo_is_exactly_one_line_on_stderr(built_catalog, samples):
    """No TensorFlow start-up lines: the one line the README promises, and exit code 2."""
    run = subprocess.run([sys.executable, "-m", "imgsim", "query", str(built_catalog), str(samples["page.jpg"])],
                         capture_output=True, text=True, env=_quiet_env())
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("imgsim query: error:"), run.stderr
    assert "HTML page" in run.stderr


def test_info_prints_no_tensorflow_lines(built_catalog):
    run = subprocess.run([sys.executable, "-m", "imgsim", "info", str(built_catalog)],
                         capture_output=True, text=True, env=_quiet_env())
    assert run.returncode == 0 and "pretrained" in run.stdout
    assert not [line for line in run.stderr.splitlines() if any(word in line for word in NOISE)], run.stderr


def test_quiet_never_overrides_what_the_user_set():
    code = "import os, imgsim; print(os.environ['TF_CPP_MIN_LOG_LEVEL'], os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_quiet_env()).stdout.split()
    assert out == ["2", "None"]  # oneDNN left as TensorFlow sets it; only its notice is hidden
    env = {**_quiet_env(), "TF_CPP_MIN_LOG_LEVEL": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.split()
    assert out == ["0", "None"]


def test_a_failed_tensorflow_import_still_says_why(tmp_path):
    """The captured start-up output is replayed when the import fails, so a broken install is not silent."""
    (tmp_path / "tensorflow.py").write_text("import os\nos.write(2, b'broken tensorflow here\\n')\nraise ImportError('no')\n")
    code = "from imgsim._quiet import tensorflow_imported; tensorflow_imported()"
    env = {**_quiet_env(), "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode != 0 and "broken tensorflow here" in run.stderr


def test_k_must_be_positive_and_help_documents_imports():
    run = subprocess.run([sys.executable, "-m", "imgsim", "query", "x", "y", "-k", "0"], capture_output=True, text=True)
    assert run.returncode == 2 and "must be >= 1" in run.stderr
    helptext = subprocess.run([sys.executable, "-m", "imgsim", "ingest", "--help"], capture_output=True, text=True).stdout
    assert "Flipkart" in helptext and "folder" in helptext.lower()


def test_importing_imgsim_leaves_streamlit_out():
    code = "import sys, imgsim, imgsim.engine, imgsim.build, imgsim.cli; print('streamlit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_region_search_and_a_box_through_the_engine(engine, shop_dir):
    """Plumbing: regions on by default for CNN features, off on request, refused for the latent;
    a user's box searches with that crop only. (The quality oracle, a real photo pasted into a
    scene, is in test_regions.py; these flat-colour toys are no test of it.)"""
    from PIL import Image

    from imgsim.approaches.regions import search_regions

    rng = np.random.default_rng(3)
    canvas = np.clip(rng.normal(150, 40, (600, 800, 3)), 0, 255).astype(np.uint8)
    item = np.asarray(Image.open(shop_dir / "greens" / "green_3.png").convert("RGB").resize((200, 240)))
    canvas[180:420, 300:500] = item
    result = engine.search(canvas, "pretrained", k=3)
    assert result.regions > 1 and result.auto_box is not None
    x0, y0, x1, y1 = result.auto_box
    assert 0 <= x0 < x1 <= 800 and 0 <= y0 < y1 <= 600
    query = engine.region_embedder("pretrained").embed(canvas)
    expected = search_regions(engine.index("pretrained"), query.vectors, 3, kinds=query.kinds)
    assert result.items["row"].tolist() == expected.rows[0].tolist()
    whole = engine.search(canvas, "pretrained", k=3, regions=False)
    assert whole.regions == 1 and whole.auto_box is None
    with pytest.raises(ValueError, match="region search is not available for autoencoder"):
        engine.search(canvas, "autoencoder", k=3, regions=True)
    boxed = engine.search(canvas, "pretrained", k=1, box=(300, 180, 500, 420))
    assert boxed.items["category"].iloc[0] == "greens" and boxed.regions == 1
