"""The hostile corpus (tests/hostile/make_corpus.py) through every ingestion entry point.

Each hostile input must end in a clear one-line message, a recorded status, and an intact
catalogue: through decode_image, the folder, CSV and zip sources, and the command line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import make_shop

from imgsim.ingest import archive, sources
from imgsim.ingest.catalog import Catalog, ingest
from imgsim.ingest.download import DownloadConfig
from imgsim.ingest.images import ImageDecodeError, decode_image

sys.path.insert(0, str(Path(__file__).parent / "hostile"))
import make_corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPECIALS = {"fifo.jpg": "FIFO", "loop_a.jpg": "symlink loop", "zero.jpg": "device",
            "folder.jpg": "directory"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus.make_corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture
def no_subprocess(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a process was started while ingesting")

    for name in ("Popen", "run", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, refuse)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(make_corpus.FILES) + sorted(SPECIALS))
def test_decode_image_refuses_each_hostile_file_in_one_line(corpus, no_subprocess, name):
    folder = "specials" if name in SPECIALS else "files"
    word = SPECIALS.get(name) or make_corpus.FILES[name][1]
    with pytest.raises(ImageDecodeError, match=word) as info:
        decode_image(corpus / folder / name)
    assert "\n" not in str(info.value)


def test_thirty_nine_megabytes_of_exif_still_decode(corpus):
    assert decode_image(corpus / "files" / "huge_exif.jpg").shape == (32, 32, 3)


SMALL = archive.ZipLimits(max_entries=2000)


@pytest.mark.parametrize("name, word", sorted(make_corpus.ZIPS.items()))
def test_each_hostile_zip_is_refused_with_its_own_message(corpus, tmp_path, name, word):
    with pytest.raises(archive.ArchiveError, match=word) as info:
        archive.unpack_zip(corpus / "zips" / name, tmp_path / "sources", SMALL)
    assert isinstance(info.value, sources.SourceError) and "\n" not in str(info.value)
    assert list((tmp_path / "sources").iterdir()) == []  # nothing half-unpacked is left


def test_the_inflated_total_is_counted_not_taken_from_the_listing(tmp_path):
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.bmp", os.urandom(300_000))
        z.writestr("b.bmp", os.urandom(300_000))
    limits = archive.ZipLimits(max_total_bytes=400_000)
    with zipfile.ZipFile(path) as z:
        files = [(info, (info.filename,)) for info in z.infolist()]
        (tmp_path / "out").mkdir()
        with pytest.raises(archive.ArchiveError, match="inflates to more than"):
            archive._extract(z, files, tmp_path / "out", limits)  # the listing check bypassed


def test_a_second_upload_with_the_same_name_never_merges_into_the_first(tmp_path):
    jpeg = make_corpus.small_jpeg()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder, names in (("a", ["one.jpg"]), ("b", ["two.jpg"])):
        with zipfile.ZipFile(tmp_path / folder / "photos.zip", "w") as z:
            for name in names:
                z.writestr(name, jpeg)
    first = archive.unpack_zip(tmp_path / "a" / "photos.zip", tmp_path / "sources")
    second = archive.unpack_zip(tmp_path / "b" / "photos.zip", tmp_path / "sources")
    assert first != second
    assert [p.name for p in first.iterdir()] == ["one.jpg"]
    assert [p.name for p in second.iterdir()] == ["two.jpg"]
    assert archive.unpack_zip(tmp_path / "a" / "photos.zip", tmp_path / "sources") == first


def _hostile_folder(corpus: Path, root: Path) -> Path:
    shop = make_shop(root, per_class=1)
    for path in sorted((corpus / "files").iterdir()):
        shutil.copy(path, shop / path.name)
    for name in SPECIALS:
        source = corpus / "specials" / name
        if name == "folder.jpg":
            continue  # a directory is walked into, not listed
        if name == "fifo.jpg":
            os.mkfifo(shop / name)
        elif source.is_symlink():
            os.symlink(os.readlink(source), shop / name)
    os.symlink("loop_a.jpg", shop / "loop_b.jpg")  # loop_a.jpg -> loop_b.jpg was copied above
    return shop


@pytest.mark.timeout(90)
def test_a_folder_of_hostile_files_builds_and_records_each(corpus, no_subprocess, tmp_path):
    shop = _hostile_folder(corpus, tmp_path / "shop")
    cat = ingest(str(shop), tmp_path / "cat")
    rows = cat.items.set_index("path")
    assert sorted(cat.ok["path"]) == ["blues/blue_0.png", "greens/green_0.png", "huge_exif.jpg",
                                      "reds/red_0.png"]
    for name, (_, word) in {**make_corpus.FILES, **make_corpus.SVGS}.items():
        assert rows.loc[name, "status"] in ("failed_to_decode", "failed_to_rasterize"), name
        assert word.lower() in rows.loc[name, "message"].lower(), name
    assert rows.loc["fifo.jpg", "status"] == "refused" and "FIFO" in rows.loc["fifo.jpg", "message"]
    assert rows.loc["loop_a.jpg", "status"] == "refused"
    assert rows.loc["zero.jpg", "status"] == "refused"
    loaded = Catalog.load(tmp_path / "cat")
    assert loaded.fingerprint == cat.fingerprint and all(p.is_file() for p in loaded.thumb_paths())


@pytest.mark.timeout(60)
def test_a_csv_of_hostile_cells_records_each(corpus, hostile_server, tmp_path, monkeypatch):
    folder = tmp_path / "shop"
    folder.mkdir()
    shutil.copy(corpus / "files" / "eps_as.jpg", folder / "eps.jpg")
    (folder / "good.jpg").write_bytes(make_corpus.small_jpeg())
    cells = {"good": "good.jpg", "eps": "eps.jpg", "passwd": "/etc/passwd",
             "file": "file:///etc/passwd", "slip": "../../etc/passwd",
             "loopback": f"{hostile_server}/ok.jpg", "drip": f"{hostile_server}/drip-close.jpg",
             "metadata": "http://169.254.169.254/latest/meta-data/"}
    lines = ["uniq_id,product_name,image"] + [f"{k},{k},{v}" for k, v in cells.items()]
    (folder / "products.csv").write_text("\n".join(lines) + "\n")
    config = DownloadConfig(read_timeout=1.5, total_timeout=2.0, retries=0)
    monkeypatch.delenv("IMGSIM_ALLOW_PRIVATE_URLS", raising=False)
    rows = ingest(str(folder / "products.csv"), tmp_path / "cat", download_config=config).items
    status = dict(zip(rows["id"], rows["status"]))
    message = dict(zip(rows["id"], rows["message"]))
    assert status["good"] == "ok"
    assert status["eps"] == "failed_to_decode" and "PostScript" in message["eps"]
    for key in ("passwd", "file", "slip"):
        assert status[key] == "refused" and message[key].startswith("line "), key
    for key in ("loopback", "drip", "metadata"):  # refused before any connection is made
        assert status[key] == "failed_to_download" and "IMGSIM_ALLOW_PRIVATE_URLS" in message[key]

    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")
    sources_only = {"loopback", "drip"}
    lines = ["uniq_id,product_name,image"] + [f"{k},{k},{cells[k]}" for k in sorted(sources_only)]
    (folder / "urls.csv").write_text("\n".join(lines) + "\n")
    rows = ingest(str(folder / "urls.csv"), tmp_path / "cat2", download_config=config).items
    status = dict(zip(rows["id"], zip(rows["status"], rows["message"])))
    assert status["loopback"][0] == "ok"
    assert status["drip"][0] == "failed_to_download" and "deadline" in status["drip"][1]


@pytest.mark.timeout(90)
def test_a_zip_source_unpacks_under_the_catalogue_and_a_bomb_leaves_it_intact(corpus, tmp_path):
    shop = make_shop(tmp_path / "shop", per_class=1)
    shutil.copy(corpus / "files" / "eps_as.jpg", shop / "eps.jpg")
    photos = tmp_path / "photos.zip"
    with zipfile.ZipFile(photos, "w") as z:
        for path in sorted(shop.rglob("*")):
            if path.is_file():
                z.write(path, "photos/" + path.relative_to(shop).as_posix())
    cat = ingest(str(photos), tmp_path / "cat")
    assert cat.manifest["source_kind"] == "zip_folder" and len(cat.ok) == 3
    assert cat.items.set_index("path").loc["eps.jpg", "status"] == "failed_to_decode"
    unpacked = list((tmp_path / "cat" / "sources").iterdir())
    assert len(unpacked) == 1 and len(unpacked[0].name) == 64
    with pytest.raises(archive.ArchiveError, match="ratio"):
        ingest(str(corpus / "zips" / "bomb.zip"), tmp_path / "cat")
    assert Catalog.load(tmp_path / "cat").fingerprint == cat.fingerprint


def _cli(*args: str, env_extra: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.timeout(120)
def test_cli_ingest_records_every_hostile_file_and_refuses_a_bad_zip(corpus, tmp_path):
    shop = _hostile_folder(corpus, tmp_path / "shop")
    env = {"IMGSIM_DATA_DIR": str(tmp_path / "data")}
    done = _cli("-m", "imgsim", "ingest", str(shop), "--out", str(tmp_path / "cat"), env_extra=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "4 of" in done.stdout and "refused" in done.stdout and "failed_to_decode" in done.stdout
    bad = _cli("-m", "imgsim", "ingest", str(corpus / "zips" / "slip.zip"), "--out",
               str(tmp_path / "cat"), env_extra=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "leaves the archive" in bad.stderr.strip().splitlines()[-1]
    assert len(Catalog.load(tmp_path / "cat").ok) == 4  # the earlier catalogue is intact


@pytest.mark.timeout(180)
def test_cli_build_from_a_zip_then_query_hostile_photos(corpus, tmp_path):
    # One interpreter for both commands, so TensorFlow is loaded once.
    shop = make_shop(tmp_path / "shop", per_class=1)
    photos = tmp_path / "photos.zip"
    with zipfile.ZipFile(photos, "w") as z:
        for path in sorted(shop.rglob("*.png")):
            z.write(path, path.relative_to(shop).as_posix())
    out = tmp_path / "cat"
    queries = [corpus / "specials" / "fifo.jpg", corpus / "specials" / "zero.jpg",
               corpus / "files" / "eps_as.jpg", corpus / "files" / "header_9999.png",
               shop / "reds" / "red_0.png"]
    amplified = corpus / "amplifiers"  # issue 24: refused in plain words, or answered
    refused = {"one_by_one.png": "too small to search: 1x1", "30000_by_3.jpg": "too thin to search",
               "one_by_30000.png": "too thin to search", "scan_bomb.jpg": "scans",
               "tag_bomb.tiff": "tag bomb"}
    answered = ["exif_bomb.png", "exif_bomb.jpg"]
    queries += [amplified / name for name in [*refused, *answered]]
    script = (
        "import sys; from imgsim.cli import main; "
        f"rc = main(['build', {str(photos)!r}, '--out', {str(out)!r}, '--approaches', 'pretrained']); "
        "print('BUILD', rc, flush=True); "
        f"sys.exit(main(['query', {str(out)!r}, *{[str(q) for q in queries]!r}]))"
    )
    env = {"IMGSIM_DATA_DIR": str(tmp_path / "data")}
    done = _cli("-c", script, env_extra=env, timeout=170)
    assert "BUILD 0" in done.stdout, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("imgsim query: error:")]
    for word in ("FIFO", "device", "PostScript", "too large"):
        assert any(word in line for line in errors), (word, errors)
    assert "red 0" in done.stdout  # the good photo was still searched
    for name, words in refused.items():
        assert any(name in line and words in line for line in errors), (name, errors)
    assert not any("`rgb`" in line for line in errors), errors  # no internal message
    for name in answered:
        assert f"== {amplified / name}\n" in done.stdout, name  # searched, not "could not be"
    assert Catalog.load(out).manifest["source_kind"] == "zip_folder"


@pytest.mark.timeout(120)
def test_kill_9_during_an_ingest_then_rebuild(tmp_path):
    shop = make_shop(tmp_path / "shop", per_class=40)
    env = {**os.environ, "PYTHONPATH": str(REPO), "IMGSIM_DATA_DIR": str(tmp_path / "data")}
    out = tmp_path / "cat"
    first = ingest(str(make_shop(tmp_path / "small", per_class=1)), out)
    for delay in (0.5, 1.5):
        proc = subprocess.Popen([sys.executable, "-m", "imgsim", "ingest", str(shop), "--out", str(out)],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        loaded = Catalog.load(out)  # whatever moment it died at, a catalogue loads
        assert len(loaded.ok) in (len(first.ok), 120)  # the old state, or the finished new one
        assert all(p.is_file() for p in loaded.thumb_paths())
    again = ingest(str(shop), out)
    assert len(again.ok) == 120 and Catalog.load(out).fingerprint == again.fingerprint
