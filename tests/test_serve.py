"""`uniseg3d serve`: the session's prompt handling against `predict` (identical masks), the click
ray, bad uploads and prompts (a message, the server still serving), and the page in a real
headless Chromium: the scene arrives, a click on the canvas segments the object under it, a
typed description gets its mask, and the screenshot is not blank."""

from __future__ import annotations

import dataclasses
import io
import shutil
import socket
import time

import numpy as np
import pytest
from plyfile import PlyData

from uniseg3d.cli import main
from uniseg3d.datasets.cache import write_scene
from uniseg3d.pipelines.predict import PromptError, read_scan
from uniseg3d.pipelines.train import load_trained_model
from uniseg3d.serve.app import ADD, NEGATIVE, ServeApp, ServeOptions
from uniseg3d.serve.session import Model, SceneSession, nearest_on_ray, parse_classes
from uniseg3d.serve.uploads import UploadError, read_upload

CLICKS = [(0.75, 0.75, 0.9), (2.0, 1.6, 0.75)]
TEXT = "the chair"
CLASSES = "chair, table ,lamp"


@pytest.fixture(scope="module")
def trained(trained_scan):
    mesh_path, checkpoint = trained_scan
    return mesh_path, checkpoint, Model(*load_trained_model(checkpoint))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_session_prompts_give_the_masks_predict_gives(tmp_path, trained):
    mesh_path, checkpoint, loaded = trained
    out = tmp_path / "predict"
    arguments = ["predict", str(mesh_path), "--checkpoint", str(checkpoint), "--text", TEXT,
                 "--classes", CLASSES, "--out", str(out)]
    for click in CLICKS:
        arguments += ["--click", ",".join(map(str, click))]
    assert main(arguments) == 0
    expected = np.load(out / "predictions.npz")
    mesh, scene = read_scan(mesh_path)
    session = SceneSession("scan", mesh, scene, loaded)
    for click in CLICKS:
        session.click(click)
    session.describe(TEXT)
    session.find_classes(CLASSES)
    prediction = session.prediction
    assert np.array_equal(prediction.clicks.masks, expected["click_masks"])
    assert np.array_equal(prediction.texts.masks, expected["text_masks"])
    assert np.array_equal(prediction.open_vocab.masks, expected["open_vocab_masks"])
    assert np.array_equal(prediction.open_vocab.labels, expected["open_vocab_labels"])
    assert np.array_equal(prediction.semantic, expected["semantic"])
    assert np.array_equal(prediction.instances.masks, expected["instance_masks"])
    assert session.names == ["chair", "table", "lamp"]
    assert [o["clicks"][0]["point"] for o in session.objects()] == session.points
    # every layer's colours are those of predict's PLYs
    for task in ("semantic", "instance", "panoptic", "interactive", "referring",
                 "open_vocabulary"):
        vertex = PlyData.read(str(out / f"{task}.ply"))["vertex"].data
        written = np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1)
        assert np.array_equal(session.layer(task), written), task
    assert np.array_equal(session.layer("input"), scene.colors)
    ply = session.export_ply("semantic")
    assert ply.startswith(b"ply\n") and b"property int label" in ply
    assert b'"objects"' in session.export_json()


def test_several_clicks_and_negative_clicks_give_predict_s_masks(tmp_path, trained):
    mesh_path, checkpoint, loaded = trained
    mesh, scene = read_scan(mesh_path)
    first, negative, second = (tuple(float(v) for v in scene.coords[i])
                               for i in (0, scene.num_points // 2, scene.num_points - 1))
    out = tmp_path / "predict"
    assert main(["predict", str(mesh_path), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--click", ",".join(map(str, first)), "--negative",
                 ",".join(map(str, negative)), "--click",
                 ",".join(map(str, second)) + "@0"]) == 0
    expected = np.load(out / "predictions.npz")
    session = SceneSession("scan", mesh, scene, loaded)
    with pytest.raises(PromptError, match="need at least one object"):
        session.click(negative, negative=True)  # refused: nothing is clicked yet
    with pytest.raises(PromptError, match="no object 0 yet"):
        session.click(second, target=0)
    assert session.click(first) == 0
    assert session.click(negative, negative=True) == -1
    assert session.click(second, target=0) == 0
    assert np.array_equal(session.prediction.clicks.masks, expected["click_masks"])
    labels = PlyData.read(str(out / "interactive.ply"))["vertex"]["mask"]
    assert np.array_equal(session.prediction.clicks.labels, labels)
    assert len(session.objects()) == 1 and len(session.objects()[0]["clicks"]) == 2


def test_the_click_ray_takes_the_nearest_point_in_front():
    coords = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.5, 0.0, -0.5], [0.0, 0.0, 2.0]])
    down = np.array([0.0, 0.0, -1.0])
    assert nearest_on_ray(coords, np.array([0.0, 0.0, 1.0]), down) == 0  # 3 is behind
    assert nearest_on_ray(coords, np.array([0.005, 0.0, 1.0]), down * 3) == 0  # 5 mm off
    assert nearest_on_ray(coords, np.array([0.3, 0.0, 1.0]), down) is None  # misses all
    assert nearest_on_ray(coords, np.array([0.5, 0.0, 1.0]), down) == 2


def test_bad_prompts_are_refused_with_a_message(trained):
    mesh_path, _, loaded = trained
    mesh, scene = read_scan(mesh_path)
    session = SceneSession("scan", mesh, scene, loaded)
    with pytest.raises(PromptError, match="from the nearest point of the scan"):
        session.click((50.0, 50.0, 50.0))
    with pytest.raises(PromptError, match="is empty"):
        session.describe("   ")
    with pytest.raises(PromptError, match="200 words"):
        session.describe("word " * 200)
    with pytest.raises(PromptError, match="one or more class names"):
        parse_classes(" , ,")
    with pytest.raises(PromptError, match="at most 64"):
        parse_classes(",".join(f"c{i}" for i in range(65)))
    assert session.points == [] and session.texts == []


@pytest.mark.parametrize("name, content, message", [
    ("room.txt", b"ply\n", "not a .ply file"),
    ("room.ply", b"solid ascii stl", "not a PLY file"),
    ("room.ply", b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                 b"property float z\nproperty uchar red\nproperty uchar green\n"
                 b"property uchar blue\nend_header\n", "at least one vertex"),
    ("room.ply", b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                 b"property float z\nproperty uchar red\nproperty uchar green\n"
                 b"property uchar blue\nend_header\n0 0 0 1 2 3\nnan 0 0 1 2 3\n",
     "NaN or infinite"),
    ("room.ply", b"ply\n" + b"0" * 3000, "the limit is"),
])
def test_bad_uploads_are_clear_errors_and_leave_nothing(tmp_path, name, content, message):
    folder = tmp_path / "uploads"
    folder.mkdir()
    with pytest.raises(UploadError, match=message):
        read_upload(name, content, folder, max_bytes=2048, k_thresh=0.01, min_verts=20)
    assert list(folder.iterdir()) == []


def test_an_upload_stays_in_its_folder_and_never_overwrites(tmp_path, trained):
    mesh_path = trained[0]
    folder = tmp_path / "uploads"
    folder.mkdir()
    content = mesh_path.read_bytes()
    first = read_upload("../../escape.ply", content, folder, 2**30, 0.01, 20)
    second = read_upload("../../escape.ply", content, folder, 2**30, 0.01, 20)
    stored = sorted(folder.iterdir())
    assert len(stored) == 2 and all(p.parent == folder for p in stored)
    assert not (tmp_path / "escape.ply").exists()
    assert first[1].num_points == second[1].num_points > 0


@pytest.fixture
def app(trained, tmp_path):
    mesh_path, _, loaded = trained
    app = ServeApp(loaded, [mesh_path], None, ServeOptions(port=free_port()))
    app.open(f"scan: {mesh_path.name}")
    yield app
    app.close()


def test_the_app_reports_bad_input_and_keeps_serving(app, trained):
    mesh_path = trained[0]
    app._guard("upload", app.open_upload, "notes.txt", b"hello")
    assert "not a .ply file" in app.status.content
    app._guard("text", app.describe, "")
    assert "is empty" in app.status.content
    app._guard("click", app.click_ray, (50.0, 50.0, 50.0), (0.0, 0.0, 1.0))
    assert "hit no point of the scan" in app.status.content
    assert app.current.points == []
    # still serving: an upload of a real scan opens, and a click segments
    app._guard("upload", app.open_upload, "mine.ply", mesh_path.read_bytes())
    assert app.current.name == "upload: mine.ply"
    assert [p.parent for p in app.upload_folder.iterdir()] == [app.upload_folder]
    target = app.current.scene.coords[0]
    app._guard("click", app.click_ray, tuple(target + [0, 0, 2.0]), (0.0, 0.0, -1.0))
    assert len(app.current.points) == 1 and app.layer_list.value == "interactive"
    app._guard("click", app.click_ray, tuple(target + [0, 0, 2.0]), (0.0, 0.0, -1.0), ADD, 2)
    assert "no object 1 yet" in app.status.content and len(app.current.points) == 1
    app.click_mode.value = NEGATIVE  # the panel's mode applies when none is passed
    app._guard("click", app.click_ray, tuple(target + [0, 0, 2.0]), (0.0, 0.0, -1.0))
    assert "negative click" in app.status.content
    assert app.current.objects_of_clicks().tolist() == [0, -1]
    assert np.array_equal(np.asarray(app.cloud.colors), app.current.layer("interactive"))


def test_a_prepared_scene_opens_from_the_cache(trained, tmp_path):
    mesh_path, _, loaded = trained
    _, scene = read_scan(mesh_path)
    write_scene(dataclasses.replace(scene, scene_id="room7"), tmp_path / "cache", {})
    app = ServeApp(loaded, [], tmp_path / "cache", ServeOptions(port=free_port()))
    try:
        assert list(app.sources) == ["cache: room7"]
        app._guard("open", app.open, "cache: room7")
        assert app.current.scene.num_points == scene.num_points
        assert app.timings["open"] and app.cloud is not None
        assert app.legend.content.count("<div>") == len(app.current.legend("semantic"))
    finally:
        app.close()


def browser_or_skip():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test "
                    "installs them as root with apt-get)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--use-gl=swiftshader",
                 "--enable-unsafe-swiftshader", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic", "--window-size=1200,800"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the page")
        time.sleep(0.1)


def test_the_page_in_a_headless_browser(app):
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = browser_or_skip()
    try:
        driver.get(app.url)
        wait_for(lambda: app.server.get_clients())
        wait_for(lambda: driver.find_elements(By.TAG_NAME, "canvas"))
        client = next(iter(app.server.get_clients().values()))
        # aim the camera at a known point from above: the canvas centre then shows it
        coords = app.current.scene.coords
        target_index = int(np.argmax(coords[:, 2]))
        target = coords[target_index]
        client.camera.position = tuple(float(v) for v in target + [0.0, -1.0, 1.5])
        client.camera.look_at = tuple(float(v) for v in target)
        wait_for(lambda: np.allclose(client.camera.look_at, target, atol=1e-3))
        time.sleep(1.0)
        canvas = max(driver.find_elements(By.TAG_NAME, "canvas"),
                     key=lambda c: c.size["width"] * c.size["height"])
        ActionChains(driver).move_to_element(canvas).click().perform()
        wait_for(lambda: "object 1" in app.objects.content)  # shown once the mask is sent
        clicked = coords[app.current.points[0]]
        assert np.linalg.norm(clicked - target) < 0.1  # the point under the canvas centre
        assert app.current.prediction.clicks.masks.shape == (1, len(coords))
        # type a description and press the button
        field = driver.find_element(By.XPATH, "//label[text()='Description']/following::input[1]")
        field.send_keys(TEXT)
        wait_for(lambda: app.description.value == TEXT)
        next(b for b in driver.find_elements(By.TAG_NAME, "button")
             if b.text == "Find description").click()
        wait_for(lambda: app.layer_list.value == "referring")  # set once the mask is sent
        assert app.current.texts == [TEXT]
        assert app.current.prediction.texts.masks.shape == (1, len(coords))
        shot = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))
        assert shot.std() > 10 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50
    finally:
        driver.quit()
