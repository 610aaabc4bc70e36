"""The web app: its JSON API on real ESC-50 clips and on bad uploads, its page, its limits, and
the page driven in a real headless browser (Chromium from the system's packages, through
Playwright), which uploads a clip and records one from a fake microphone."""
import concurrent.futures
import json
import os
import shutil
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest

from experiments.classify import classify_files
from experiments.inference import DEFAULT_CHECKPOINT, Classifier
from experiments.serve import models, server

CLIP = "1-100032-A-0.flac"  # a dog, fold 1


def request(base, path, data=None, headers=None, method=None):
    """(status, JSON or text) of one request; error statuses are answers too."""
    req = urllib.request.Request(base + path, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, body, kind = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, body, kind = e.code, e.read(), e.headers.get("Content-Type", "")
    return status, json.loads(body) if kind.startswith("application/json") else body.decode()


def multipart(field, name, content):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() \
        + content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def start(shelf, **limits):
    app = server.serve_in_thread(shelf, server.Limits(**limits))
    return app, "http://127.0.0.1:%d" % app.server_address[1]


@pytest.fixture(scope="module")
def app():
    shelf = models.Shelf([DEFAULT_CHECKPOINT])
    running, base = start(shelf, max_seconds=60, max_mb=5, wait=120)
    yield running, base, shelf
    running.shutdown()
    running.server_close()
    assert not os.path.exists(running.scratch)  # the temporary folder goes with the server


def test_the_page_and_its_assets(app):
    _, base, _ = app
    status, page = request(base, "/")
    assert status == 200
    for element in ('<input type="file" id="file"', 'id="top"', 'id="model-select"',
                    'id="record"', 'src="/assets/app.js"', 'href="/assets/style.css"'):
        assert element in page
    assert "http" not in page.split("<footer>")[0].replace("http://HOST", "")  # no CDN
    assert request(base, "/assets/app.js")[0] == 200
    assert request(base, "/assets/style.css")[0] == 200
    status, answer = request(base, "/assets/../server.py")
    assert status == 404 and "error" in answer


def test_models_come_with_their_card(app):
    _, base, _ = app
    status, answer = request(base, "/api/models")
    card = answer["models"][0]
    assert status == 200 and card["default"] and card["id"] == "cpu128bc_fold1"
    assert card["preset"] == "cpu128bc" and card["trained_on"] == [2, 3, 4, 5]
    assert card["accuracy"] == 0.8275 and card["stored"] == "float16"
    assert answer["limits"] == {"max_seconds": 60, "max_mb": 5}


def test_a_clip_gets_the_classes_classify_gives(app, esc50_root):
    _, base, shelf = app
    path = os.path.join(esc50_root, "audio", CLIP)
    content = open(path, "rb").read()
    status, raw = request(base, "/api/classify", content, {"Content-Type": "audio/flac"})
    assert status == 200, raw
    expected = next(classify_files(shelf.get()[0], [path], 5, 1.0, 16, timeline=True))
    assert raw["top"] == expected["top"] and raw["top"][0]["label"] == "dog"
    assert raw["timeline"] == expected["timeline"] and raw["duration"] == 5.0
    assert [e["prob"] for e in raw["top"]] == sorted((e["prob"] for e in raw["top"]),
                                                     reverse=True)
    for picture in ("waveform", "logmel", "feature_maps"):
        assert raw["pictures"][picture].startswith("data:image/png;base64,")
    body, headers = multipart("file", CLIP, content)
    status, field = request(base, "/api/classify", body, headers)
    assert status == 200 and field["top"] == raw["top"]


def test_a_long_clip_gets_a_timeline(app, tmp_path):
    import soundfile as sf
    _, base, _ = app
    sr = 22050
    y = 0.2 * np.sin(2 * np.pi * 440 * np.arange(12 * sr) / sr)
    sf.write(tmp_path / "tone.wav", y, sr)
    status, answer = request(base, "/api/classify?hop=2",
                             (tmp_path / "tone.wav").read_bytes())
    assert status == 200, answer
    assert [w["start"] for w in answer["timeline"]] == [0.0, 2.0, 4.0, 6.0, 7.0]


@pytest.mark.parametrize("what, data, path, status, message", [
    ("undecodable", b"not audio at all" * 20, "/api/classify", 415, "not audio"),
    ("empty", b"", "/api/classify", 400, "empty"),
    ("unknown model", b"RIFF", "/api/classify?model=nope", 404, "unknown model 'nope'"),
    ("bad hop", b"RIFF", "/api/classify?hop=0", 400, "hop must be"),
    ("unknown API", b"RIFF", "/api/other", 404, "no API"),
])
def test_a_bad_upload_is_a_named_4xx_and_the_server_stays_up(app, esc50_root, what, data,
                                                             path, status, message):
    running, base, _ = app
    got, answer = request(base, path, data, method="POST")
    assert got == status and message in answer["error"], answer
    assert "scratchnet-serve" not in answer["error"]  # no temporary path in the message
    assert os.listdir(running.scratch) == []  # the upload was removed
    clip = open(os.path.join(esc50_root, "audio", CLIP), "rb").read()
    assert request(base, "/api/classify", clip)[0] == 200


def test_a_multipart_body_without_a_file_field(app):
    _, base, _ = app
    body, headers = multipart("other", "x.wav", b"RIFF")
    status, answer = request(base, "/api/classify", body, headers)
    assert status == 400 and 'no field "file"' in answer["error"]


@pytest.mark.parametrize("limits, message", [
    (dict(max_seconds=60, max_mb=0.001), "over the limit of 0.001 MB"),
    (dict(max_seconds=2, max_mb=5), "5 s long, over the limit of 2 s")])
def test_over_the_limits_is_413(esc50_root, limits, message):
    clip = open(os.path.join(esc50_root, "audio", CLIP), "rb").read()
    running, base = start(models.Shelf([DEFAULT_CHECKPOINT]), **limits)
    try:
        status, answer = request(base, "/api/classify", clip)
        assert status == 413 and message in answer["error"], answer
    finally:
        running.shutdown()
        running.server_close()


def test_concurrent_uploads_each_get_their_answer(app, esc50_root):
    _, base, _ = app
    names = ["1-100032-A-0.flac", "1-17367-A-10.flac", "1-13571-A-46.flac"] * 2
    clips = [open(os.path.join(esc50_root, "audio", n), "rb").read() for n in names]
    with concurrent.futures.ThreadPoolExecutor(len(clips)) as pool:
        answers = list(pool.map(lambda c: request(base, "/api/classify", c), clips))
    assert all(status == 200 for status, _ in answers)
    assert [a["top"] for _, a in answers[:3]] == [a["top"] for _, a in answers[3:]]
    assert answers[0][1]["top"][0]["label"] == "dog"


def test_a_folder_of_checkpoints_is_offered_model_by_model(tmp_path, esc50_root):
    for run in ("a", "b"):
        (tmp_path / run / "fold1").mkdir(parents=True)
        shutil.copy(DEFAULT_CHECKPOINT, tmp_path / run / "fold1" / "model.npz")
    (tmp_path / "notes.npz").write_bytes(b"not a checkpoint")
    found = models.find_checkpoints(str(tmp_path))
    assert len(found) == 2
    shelf = models.Shelf(found)
    assert list(shelf.paths) == ["fold1", "fold1-2"]
    running, base = start(shelf)
    try:
        clip = open(os.path.join(esc50_root, "audio", CLIP), "rb").read()
        status, answer = request(base, "/api/classify?model=fold1-2", clip)
        assert status == 200 and answer["model"] == "fold1-2"
    finally:
        running.shutdown()
        running.server_close()


def test_the_command_checks_its_arguments_and_warns_when_open(refused, monkeypatch, capsys):
    from experiments.serve import __main__ as command
    refused(command.main, ["--port", "70000"], "--port: expected a port in 0..65535")
    refused(command.main, ["--max-mb", "0"], "--max-mb: expected a number > 0")
    refused(command.main, ["--checkpoint", "/nowhere"], "no such file or folder")

    class Stop(Exception):
        pass

    def refuse_to_serve(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(command, "make_server", refuse_to_serve)
    with pytest.raises(Stop):
        command.main(["--host", "0.0.0.0"])
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err
    with pytest.raises(Stop):
        command.main([])
    assert "warning" not in capsys.readouterr().err  # the default binds to 127.0.0.1


# -- in a real browser -------------------------------------------------------------------------

def chromium_or_skip():
    """The system's Chromium and Playwright; in CI ($CI) their absence fails the test."""
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        missing = "playwright is not installed (the test extra has it)"
    else:
        path = shutil.which("chromium") or shutil.which("chromium-browser")
        if path:
            return path
        missing = "no chromium on PATH (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"browser test: {missing}; in CI it must run", pytrace=False)
    pytest.skip(missing)


def test_the_page_in_a_browser_uploads_and_records(app, esc50_root, tmp_path):
    browser_path = chromium_or_skip()
    from playwright.sync_api import sync_playwright
    _, base, _ = app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.goto(base + "/")
            page.wait_for_selector("#model-select option", state="attached")
            assert "82.75%" in page.inner_text("#model-card")
            page.set_input_files("#file", os.path.join(esc50_root, "audio", CLIP))
            page.wait_for_selector("#result:not([hidden])", timeout=120000)
            assert page.inner_text("#top li .label") == "dog"
            assert page.inner_text("#result-name") == CLIP
            for image in ("#waveform", "#logmel", "#maps"):
                assert page.eval_on_selector(image, "img => img.naturalWidth") > 100
            screenshot = tmp_path / "serve.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if os.environ.get("SERVE_SCREENSHOT"):  # README's picture, when asked for
                shutil.copy(screenshot, os.environ["SERVE_SCREENSHOT"])
            # An undecodable file: a clear message on the page, and the page still works.
            bad = tmp_path / "broken.wav"
            bad.write_bytes(b"RIFF and nothing else")
            page.set_input_files("#file", str(bad))
            page.wait_for_selector("#status.error", timeout=60000)
            assert "not audio" in page.inner_text("#status")
            # A recording from the (fake) microphone, made into WAV by the page.
            page.click("#record")
            page.wait_for_timeout(2500)
            page.click("#record")
            page.wait_for_function(
                "document.getElementById('result-name').textContent === 'recording.wav'",
                timeout=120000)
            assert page.inner_text("#status").startswith("recording.wav: ")
        finally:
            browser.close()
