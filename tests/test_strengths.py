"""What each approach is for: the build's evaluation report, and the sentences the app shows."""

import json
import shutil

from imgsim import strengths


class StubEngine:
    def __init__(self, names):
        self.names = names

    def approaches(self):
        return self.names


def test_sentences_say_what_was_measured_and_which_is_best(monkeypatch):
    report = {"label_column": "articleType", "chance": 0.07,
              "pretrained": {"precision@10": 0.79}, "tuned": {"precision@10": 0.84},
              "autoencoder": {"precision@10": 0.61}}
    phone = {"pretrained": {"first": 0.74, "top10": 0.92, "photos": 50},
             "tuned": {"first": 0.86, "top10": 0.97, "photos": 50}, "autoencoder": None}
    monkeypatch.setattr(strengths, "saved_report", lambda engine: report)
    monkeypatch.setattr(strengths, "phone_recall", lambda engine, a: phone[a])
    said = strengths.describe(StubEngine(["pretrained", "autoencoder", "tuned"]))
    assert said["tuned"] == ("Finds the product in a phone photo first 9 times in 10, and among the first 10 "
                             "results 10 times in 10 (50 simulated phone photos of this catalogue). For a "
                             "catalogue photo, 8 of the first 10 results have the same articleType (by chance: 1). "
                             "The best here for phone photos and for more of the same articleType.")
    assert "first 7 times in 10" in said["pretrained"] and "best" not in said["pretrained"]
    assert said["autoencoder"] == ("For a catalogue photo, 6 of the first 10 results have the same articleType "
                                   "(by chance: 1).")
    monkeypatch.setattr(strengths, "saved_report", lambda engine: None)
    monkeypatch.setattr(strengths, "phone_recall", lambda engine, a: None)
    assert strengths.describe(StubEngine(["pretrained"])) == {"pretrained": "Not measured on this catalogue yet."}


def test_the_build_records_a_report_valid_for_the_stores_it_scored(built_catalog, tmp_path):
    from imgsim.engine import Engine
    from imgsim.ingest.catalog import Catalog

    root = tmp_path / "shop"
    shutil.copytree(built_catalog, root, symlinks=True)
    saved = json.loads((root / "models" / "evaluation" / "report.json").read_text())  # the build wrote it
    lines = []
    report = strengths.record(Engine.open(root), log=lines.append)
    assert report == saved and not lines  # current: not scored again
    assert report["label_column"] == "label" and 0 <= report["pretrained"]["precision@10"] <= 1
    (root / "models" / "evaluation").unlink()  # the link to the current version: now there is none
    assert strengths.record(Engine.open(root), log=lines.append) == report
    assert lines[0].startswith("evaluation: pretrained P@10")
    engine = Engine.open(root)
    assert strengths.saved_report(engine) == report
    said = engine.strengths()
    assert "have the same label" in said["pretrained"]  # 12 items: no calibration, so no phone sentence
    engine.close()
    # a store embedded by another model (a retrained one) is no longer described by that report
    catalog = Catalog.load(root)
    real = {a: json.loads((root / "stores" / a / "manifest.json").read_text()) for a in ("pretrained", "autoencoder")}
    assert strengths.saved_report(StubStores(catalog, real)) == report
    retrained = {**real, "autoencoder": {**real["autoencoder"], "fingerprint": "retrained"}}
    assert strengths.saved_report(StubStores(catalog, retrained)) is None


class StubStores:
    """An engine over ``catalog`` whose stores have the given manifests."""

    def __init__(self, catalog, manifests):
        self.catalog, self.manifests = catalog, manifests

    def approaches(self):
        return list(self.manifests)

    def store(self, name):
        return type("Store", (), {"manifest": self.manifests[name]})
