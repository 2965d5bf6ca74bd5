"""Downloads against a real HTTP server on 127.0.0.1."""

import pandas as pd
import pytest

from imgsim import catalog, download
from imgsim.download import DownloadConfig, fetch, make_session

FAST = DownloadConfig(workers=4, connect_timeout=2, read_timeout=1.0, retries=2, backoff=0.01,
                      max_bytes=1024 * 1024)


@pytest.mark.parametrize("path, status, words", [
    ("/good/a.jpg", download.OK, "bytes"),
    ("/missing.jpg", download.FAILED_TO_DOWNLOAD, "HTTP 404"),
    ("/slow.jpg", download.FAILED_TO_DOWNLOAD, "timed out"),
    ("/truncated.jpg", download.FAILED_TO_DOWNLOAD, "closed before the body was complete"),
    ("/page.jpg", download.FAILED_TO_DECODE, "HTML page"),
    ("/huge.jpg", download.TOO_LARGE, "cap"),
    ("/loop.jpg", download.FAILED_TO_DOWNLOAD, "redirect"),
])
def test_fetch_reports_each_failure(http_server, path, status, words):
    base, _ = http_server
    result = fetch(make_session(FAST), base + path, FAST)
    assert result.status == status
    assert words in result.message


def test_server_error_is_retried(http_server):
    base, counts = http_server
    result = fetch(make_session(FAST), base + "/flaky-once.jpg", FAST)
    assert result.status == download.OK
    assert counts["/flaky-once.jpg"] == 2


def write_flipkart_csv(path, base):
    urls = {"p1": "/good/1.jpg", "p2": "/missing.jpg", "p3": "/flaky-csv.jpg", "p4": "/page.jpg",
            "p5": "/truncated.jpg", "p6": "/good/6.jpg"}
    rows = [{
        "uniq_id": pid, "product_name": f"Product {pid}",
        "product_category_tree": '["Clothing >> Women\'s Clothing >> Shorts >> Alisha Shorts"]',
        "image": f'["{base}{url}", "{base}/good/second.jpg"]', "brand": "Alisha", "retail_price": "999",
    } for pid, url in urls.items()]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_csv_import_records_every_row_and_rerun_fetches_only_failures(http_server, tmp_path):
    base, counts = http_server
    csv = tmp_path / "flipkart.csv"
    write_flipkart_csv(csv, base)
    config = DownloadConfig(workers=3, read_timeout=1.0, retries=0, backoff=0.01)
    cat = catalog.ingest(str(csv), tmp_path / "cat", download_config=config)
    status = dict(zip(cat.items["id"], cat.items["status"]))
    assert status == {"p1": "ok", "p2": "failed_to_download", "p3": "failed_to_download",
                      "p4": "failed_to_decode", "p5": "failed_to_download", "p6": "ok"}
    row = cat.items.set_index("id").loc["p1"]
    assert (row["category"], row["subcategory"], row["price"]) == ("Clothing", "Women's Clothing", "999")
    assert row["category_path"] == "Clothing > Women's Clothing > Shorts > Alisha Shorts"
    assert not [p for p in (tmp_path / "cat").rglob("*") if ".part" in p.name or ".tmp" in p.name]

    before = dict(counts)
    cat = catalog.ingest(str(csv), tmp_path / "cat", download_config=config)
    assert counts.get("/good/1.jpg") == before.get("/good/1.jpg")  # not fetched again
    assert counts["/missing.jpg"] == before["/missing.jpg"] + 1  # failures are retried
    assert dict(zip(cat.items["id"], cat.items["status"]))["p3"] == "ok"  # 500 then 200
