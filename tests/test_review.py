"""The review loop: scripts/review.py and scripts/review_server.py (API with Flask's test client, the page in a
real headless Chromium with selenium), and fine-tuning on the corrections manifest it writes.

The results folders are written by the real pipeline (form_pipeline.run_directory) with a stand-in engine
that "reads" the example form's ground truth, some fields wrong, with confidences chosen per field, so the
review has something to correct and the screenshot looks like a real review.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image

from scripts import atomic
from scripts import form_pipeline as fp
from scripts import review as R
from scripts import review_server as S

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "template.png"
SCAN = ROOT / "examples" / "filled_form_scan.png"
TRUTH = {int(k): v for k, v in json.loads((ROOT / "examples" / "ground_truth.json").read_text(encoding="utf-8")).items()}
MISREAD = {2: "Natalia Adrian Echeverria Vargas", 7: "02/11/43", 11: "CC 1.077.895.476", 14: "22.514,83"}


class ReadsTheTruth:
    """Reads a crop of region R as the example's ground truth of R (misreading MISREAD), confident where
    right. The region comes from the crop itself (tagged by `tagged_crops`), not from the call order: the
    pipeline batches crops by width."""

    name = "stand-in"

    def recognize(self, images):
        out = []
        for image in images:
            region = image.info["region"]
            wrong = region in MISREAD
            text = MISREAD.get(region, TRUTH[region])
            conf = 0.55 + 0.01 * region if wrong else 0.9 + 0.005 * region
            out.append((text, conf, conf - (0.4 if wrong else 0.05)))
        return out

    def describe(self):
        return {"engine": self.name, "model": None}


def tagged_crops(original):
    def crop_regions(page, regions, **kw):
        crops = original(page, regions, **kw)
        for crop, region in zip(crops, regions):
            crop.info["region"] = region.number
        return crops

    return crop_regions


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """A directory-mode output of two scans: OUT/{form_a,form_b}/results.json ... and combined_results.csv."""
    root = tmp_path_factory.mktemp("review_src")
    scans = root / "scans"
    scans.mkdir()
    shutil.copy(SCAN, scans / "form_a.png")
    shutil.copy(SCAN, scans / "form_b.png")
    config = fp.FormOCRConfig(template=str(TEMPLATE), image=str(scans), output_dir=str(root / "out"),
                              show_progress=False, flag_threshold=0.4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fp.forms, "crop_regions", tagged_crops(fp.forms.crop_regions))
        summary = fp.run_directory(config, lambda model, role, cfg: ReadsTheTruth())
    assert summary["ok"] == 2
    return root / "out"


@pytest.fixture
def results(processed, tmp_path):
    """A fresh copy of the processed folder per test (the tests write verdicts into it)."""
    shutil.copytree(processed, tmp_path / "out")
    return tmp_path / "out"


@pytest.fixture
def client(results):
    reviewer = R.Reviewer(R.find_forms([results]), results / "corrections.csv")
    return S.create_app(reviewer).test_client()


def test_fields_listed_lowest_confidence_first_with_filters(client):
    data = client.get("/api/fields").get_json()
    assert data["total"] == data["shown"] == 36 and data["reviewed"] == 0 and data["forms"] == ["form_a", "form_b"]
    scores = [f["score"] for f in data["fields"]]
    assert scores == sorted(scores) and all(f["score"] == f["min_confidence"] for f in data["fields"])
    assert {f["region"] for f in data["fields"][:8]} == set(MISREAD)  # the misread ones come first
    assert data["flagged"] == 8 and all(f["flagged"] == (f["region"] in MISREAD) for f in data["fields"])
    assert data["flagging"]["form_a"]["source"] == "--flag-threshold"
    flagged = client.get("/api/fields?flagged=1").get_json()
    assert flagged["shown"] == 8 and flagged["total"] == 36 and all(f["flagged"] for f in flagged["fields"])
    one_form = client.get("/api/fields?form=form_b&flagged=1").get_json()["fields"]
    assert len(one_form) == 4 and {f["form"] for f in one_form} == {"form_b"}
    box = client.get("/api/fields?box=11").get_json()["fields"]
    assert [(f["form"], f["region"], f["text"]) for f in box] == [("form_a", 11, MISREAD[11]), ("form_b", 11, MISREAD[11])]
    assert client.get("/api/fields?box=eleven").status_code == 400
    first = data["fields"][0]
    assert set(first) >= {"id", "form", "region", "bbox", "text", "confidence", "flagged", "reviewed_text", "reviewed", "crop"}


def test_crop_is_served(client, results):
    png = client.get("/crops/0/2")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.data == (results / "form_a" / "regions" / "region_02.png").read_bytes()
    assert client.get("/crops/0/99").status_code == 404 and client.get("/crops/5/1").status_code == 404


def test_verdicts_are_written_into_the_results_files(client, results):
    """A correction and an acceptance: results.json, results.csv, combined_results.csv and the manifest
    gain them at once; the model's text and every other key stay as they were."""
    before = json.loads((results / "form_a" / "results.json").read_text(encoding="utf-8"))
    r = client.post("/api/fields/0/2", json={"text": TRUTH[2]})
    assert r.status_code == 200 and r.get_json()["reviewed_text"] == TRUTH[2] and r.get_json()["reviewed"]
    assert client.post("/api/fields/0/5", json={"text": TRUTH[5]}).status_code == 200  # accepted as read

    after = json.loads((results / "form_a" / "results.json").read_text(encoding="utf-8"))
    rows = {row["region"]: row for row in after["regions"]}
    assert rows[2]["text"] == MISREAD[2] and rows[2]["reviewed_text"] == TRUTH[2] and rows[2]["reviewed"] is True
    assert rows[5]["text"] == rows[5]["reviewed_text"] == TRUTH[5]
    assert "reviewed" not in rows[3]
    strip = lambda rec: {**rec, "regions": [{k: v for k, v in x.items() if k not in R.REVIEW_COLUMNS}  # noqa: E731
                                            for x in rec["regions"]]}
    assert strip(after) == before  # nothing else changed
    with open(results / "form_a" / "results.csv", newline="", encoding="utf-8") as f:
        table = {int(line["region"]): line for line in csv.DictReader(f)}
    assert table[2]["text"] == MISREAD[2] and table[2]["reviewed_text"] == TRUTH[2] and table[2]["reviewed"] == "True"
    assert table[3]["reviewed_text"] == "" and table[3]["reviewed"] == ""
    assert set(fp.REGION_FIELDS) <= set(table[2])
    with open(results / fp.COMBINED_CSV, newline="", encoding="utf-8") as f:
        combined = list(csv.DictReader(f))
    hits = [line for line in combined if line["reviewed"] == "True"]
    assert [(Path(line["scan"]).name, line["region"], line["reviewed_text"]) for line in hits] == \
        [("form_a.png", "2", TRUTH[2]), ("form_a.png", "5", TRUTH[5])]
    assert not list(results.rglob("*.tmp"))  # atomic writes leave no temporary files

    from scripts.mlx_trainer import read_labels

    manifest = read_labels(results / "corrections.csv")
    assert [(r["text"], r["model_text"], r["corrected"]) for r in manifest] == \
        [(TRUTH[2], MISREAD[2], "True"), (TRUTH[5], TRUTH[5], "False")]
    assert Image.open(manifest[0]["image"]).size == Image.open(results / "form_a" / "regions" / "region_02.png").size


def test_verdicts_survive_a_restart_and_can_be_undone(client, results):
    client.post("/api/fields/1/7", json={"text": TRUTH[7]})
    reloaded = S.create_app(R.Reviewer(R.find_forms([results]), results / "corrections.csv")).test_client()
    data = reloaded.get("/api/fields").get_json()
    reviewed = [f for f in data["fields"] if f["reviewed"]]
    assert data["reviewed"] == 1 and [(f["form"], f["region"], f["reviewed_text"]) for f in reviewed] == \
        [("form_b", 7, TRUTH[7])]
    undone = reloaded.post("/api/fields/1/7", json={"text": None}).get_json()
    assert undone["reviewed"] is False and undone["reviewed_text"] is None and undone["text"] == MISREAD[7]
    assert reloaded.get("/api/fields").get_json()["reviewed"] == 0
    assert (results / "corrections.csv").read_text(encoding="utf-8").strip().count("\n") == 0  # header only


def test_bad_requests_are_refused_clearly(client, results):
    assert client.post("/api/fields/0/2", data="text").status_code == 400
    assert "text" in client.post("/api/fields/0/2", json={"txt": "x"}).get_json()["error"]
    assert client.post("/api/fields/0/2", json={"text": 5}).status_code == 400
    r = client.post("/api/fields/0/99", json={"text": "x"})
    assert r.status_code == 404 and "no region 99" in r.get_json()["error"]
    assert client.post("/api/fields/9/1", json={"text": "x"}).status_code == 404
    with pytest.raises(R.ReviewError, match="no results.json"):
        R.find_forms([results / "form_a" / "regions"])
    with pytest.raises(R.ReviewError, match="not found"):
        R.find_forms([results / "nothing"])


def test_a_crash_mid_write_keeps_the_old_file(results, monkeypatch):
    reviewer = R.Reviewer(R.find_forms([results]))
    path = results / "form_a" / "results.json"
    old = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        reviewer.review(0, 2, "x")
    assert path.read_bytes() == old and not list(results.rglob("*.tmp"))


def test_results_with_extra_keys_and_no_flags(results):
    """Results from other versions: unknown keys are kept, a missing `flagged` comes from --threshold."""
    path = results / "form_b" / "results.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record["alignment"]["residual_px"] = 1.5
    for row in record["regions"]:
        row.pop("flagged")
        row["box_quality"] = "ok"
    path.write_text(json.dumps(record), encoding="utf-8")
    reviewer = R.Reviewer(R.find_forms([results / "form_b"]), threshold=0.7)
    assert sum(bool(f["flagged"]) for f in reviewer.fields()) == 4
    reviewer.review(0, 11, TRUTH[11])
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["alignment"]["residual_px"] == 1.5 and all(r["box_quality"] == "ok" for r in stored["regions"])


def test_export_command(results, capsys):
    R.Reviewer(R.find_forms([results])).review(0, 14, TRUTH[14])
    out = results.parent / "elsewhere" / "corrections.csv"
    assert S.main([str(results / "form_a"), str(results / "form_b"), "--export", "--corrections", str(out)]) == 0
    assert "1 reviewed fields of 36" in capsys.readouterr().out
    with open(out, newline="", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    assert row["image"] == os.path.join("..", "out", "form_a", "regions", "region_14.png") and row["text"] == TRUTH[14]
    assert S.main([str(results / "missing"), "--export"]) == 2


def test_corrections_manifest_trains(results, tiny_model, tmp_path, capsys):
    """`mlx_trainer.py train --init MODEL --manifest corrections.csv` on the review output: trains, holds
    part back, and reports the validation CER before and after."""
    from scripts import mlx_trainer as T

    reviewer = R.Reviewer(R.find_forms([results]), results / "corrections.csv")
    for form in (0, 1):
        for region, text in TRUTH.items():
            reviewer.review(form, region, text)
    run = tmp_path / "run"
    assert T.main(["train", "--init", str(tiny_model[1]), "--manifest", str(results / "corrections.csv"),
                   "--out", str(run), "--steps", "2", "--batch-size", "4", "--val-split", "0.25", "--eval-every", "1",
                   "--workers", "0", "--warmup", "1", "--lr", "1e-4", "--max-target-length", "16",
                   "--eval-batch-size", "9"]) == 0
    out = capsys.readouterr().out
    assert "held-back validation (9 lines): CER" in out and "before" in out
    history = json.loads((run / "history.json").read_text())
    assert [h["step"] for h in history["val"]] == [0, 1, 2] and len(history["train"]) == 2
    assert (run / "best" / "config.json").is_file() and (run / "last" / "trainer_state.json").is_file()
    info = json.loads((run / "run_info.json").read_text())
    assert info["data"]["train_rows"] == 27


# --------------------------------------------------------------------------------------------
# The page, in a real browser
# --------------------------------------------------------------------------------------------

def chrome():
    """A headless Chromium driven by selenium, or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (./setup_mlx.sh --dev)")
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("Chromium or chromedriver not installed (./setup_mlx.sh --dev installs Debian's chromium "
                    "and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(flag)
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(driver_path), options=options)


@pytest.fixture
def browser():
    driver = chrome()
    yield driver
    driver.quit()


@pytest.fixture
def served(results, monkeypatch):
    monkeypatch.chdir(results.parent)  # paths as a user passes them: relative (they show on the page)
    reviewer = R.Reviewer(R.find_forms(["out"]), Path("out") / "corrections.csv")
    server = S.make_server(reviewer, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", results
    server.shutdown()
    thread.join(10)
    server.server_close()


def test_page_keyboard_review_survives_reload(browser, served, tmp_path):
    """Open the page, correct two fields with the keyboard only (type, Enter), reload: both are kept, on the
    page and in results.json. The screenshot is saved (REVIEW_SCREENSHOT=docs/review_page.png puts it in the repo)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, results = served
    wait = WebDriverWait(browser, 20)
    browser.get(url)
    rows = lambda: browser.find_elements(By.CSS_SELECTOR, ".field")  # noqa: E731
    wait.until(lambda d: len(rows()) == 36)
    wait.until(lambda d: all(img.get_property("naturalWidth") > 0 for img in d.find_elements(By.CSS_SELECTOR, ".field img")))
    first, second = rows()[0], rows()[1]
    targets = [(first.get_attribute("data-id"), first), (second.get_attribute("data-id"), second)]
    active = browser.switch_to.active_element
    assert active == first.find_element(By.TAG_NAME, "input")  # the lowest-confidence field has the focus
    expected = {}
    for field_id, row in targets:
        form, region = map(int, field_id.split("/"))
        expected[field_id] = TRUTH[region]
        browser.switch_to.active_element.send_keys(TRUTH[region])  # its text is selected: typing replaces it
        browser.switch_to.active_element.send_keys(Keys.ENTER)  # saves, moves on
    wait.until(lambda d: "2 of 36 reviewed" in d.find_element(By.ID, "progress").text)
    browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)  # moving on saves nothing
    browser.switch_to.active_element.send_keys(Keys.ARROW_UP, Keys.ARROW_UP)
    assert browser.switch_to.active_element == second.find_element(By.TAG_NAME, "input")

    browser.refresh()
    wait.until(lambda d: len(rows()) == 36 and "2 of 36 reviewed" in d.find_element(By.ID, "progress").text)
    shown = {r.get_attribute("data-id"): r for r in rows()}
    for field_id, text in expected.items():
        assert shown[field_id].find_element(By.TAG_NAME, "input").get_property("value") == text
        assert "corrected" in shown[field_id].get_attribute("class")
        form, region = map(int, field_id.split("/"))
        record = json.loads((results / ("form_a", "form_b")[form] / "results.json").read_text(encoding="utf-8"))
        row = next(r for r in record["regions"] if r["region"] == region)
        assert row["reviewed_text"] == text and row["reviewed"] is True and row["text"] == MISREAD[region]
    # after the reload the first unreviewed field has the focus
    assert browser.switch_to.active_element == rows()[2].find_element(By.TAG_NAME, "input")

    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ALT, "f")  # flagged only
    wait.until(lambda d: len(rows()) == 8)
    browser.find_element(By.ID, "flagged-only").click()
    wait.until(lambda d: len(rows()) == 36)
    browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)  # a little way down, as one reviews
    browser.set_window_size(1400, 760)
    shot = tmp_path / "review_page.png"
    assert browser.save_screenshot(str(shot))
    assert Image.open(shot).size[0] >= 1000
    if os.environ.get("REVIEW_SCREENSHOT"):  # for the guide: a small palette PNG
        keep = ROOT / os.environ["REVIEW_SCREENSHOT"]
        keep.parent.mkdir(parents=True, exist_ok=True)
        Image.open(shot).convert("RGB").quantize(colors=64).save(keep, optimize=True)
