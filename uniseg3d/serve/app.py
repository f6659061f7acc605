"""The browser app on viser: the scan as a point cloud (orbit, pan, zoom), and a panel to open
a scan, switch layers, click objects (a new object, another click on an object, or a negative
click on background), type a description or a class list, and download the result.

viser ships its web client inside its wheel and serves it from this process (no CDN, works
offline); the page and the server talk over one websocket. The app is for one person on one
machine: every connected page shows the same scene and state. Model work runs under one lock,
so prompts are handled in the order they arrive; `timings` keeps, per kind of request, the
seconds from the server receiving it to the new colours being sent.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import viser

from uniseg3d.datasets.cache import cached_scene_ids, read_scene
from uniseg3d.datasets.ply import Mesh
from uniseg3d.datasets.scene import Scene
from uniseg3d.pipelines.predict import PromptError, read_scan
from uniseg3d.serve.session import LAYERS, Model, SceneSession, nearest_on_ray
from uniseg3d.serve.uploads import UploadError, read_upload

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_CACHE_SCENES = 50  # prepared scenes offered in the scene list
NEW, ADD, NEGATIVE = "new object", "add to object", "negative (background)"
CLICK_MODES = (NEW, ADD, NEGATIVE)  # what the next click on the scan does


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    max_upload_mb: float = 200.0
    k_thresh: float = 0.01
    min_verts: int = 20
    point_size: float = 0.02


@dataclass(frozen=True)
class CachedScene:
    cache: Path
    scene_id: str


def cache_sources(cache: Path | None) -> dict[str, CachedScene]:
    """'cache: <scene>' for the prepared scenes of `cache` (the first 50)."""
    if cache is None or not Path(cache).is_dir():
        return {}
    return {f"cache: {scene}": CachedScene(Path(cache), scene)
            for scene in cached_scene_ids(cache)[:MAX_CACHE_SCENES]}


class ServeApp:
    def __init__(self, loaded: Model, scans: list[Path], cache: Path | None,
                 options: ServeOptions = ServeOptions()):
        self.loaded, self.options = loaded, options
        self.lock = threading.RLock()  # viser calls update callbacks in the assigning thread
        self._depth = 0
        self.sources: dict[str, object] = {f"scan: {p.name}": Path(p) for p in scans}
        self.sources.update(cache_sources(cache))
        self.sessions: dict[str, SceneSession] = {}
        self.current: SceneSession | None = None
        self.timings: dict[str, list[float]] = defaultdict(list)
        self.messages: list[str] = []
        self._uploads = tempfile.TemporaryDirectory(prefix="uniseg3d-uploads-")
        self.server = viser.ViserServer(host=options.host, port=options.port, verbose=False)
        self.server.scene.set_up_direction("+z")
        self.cloud = None  # the point cloud shown, and the scene it shows
        self._cloud_scene: str | None = None
        self._build_panel()
        self.server.scene.on_click()(self._on_click)
        self.server.on_client_connect(self._on_connect)

    @property
    def upload_folder(self) -> Path:
        return Path(self._uploads.name)

    @property
    def url(self) -> str:
        host = self.options.host if ":" not in self.options.host else f"[{self.options.host}]"
        return f"http://{host}:{self.server.get_port()}"

    # panel ------------------------------------------------------------------------------

    def _build_panel(self) -> None:
        gui = self.server.gui
        options = list(self.sources) or ["(upload a scan)"]
        self.scene_list = gui.add_dropdown("Scene", options, initial_value=options[0])
        self.scene_list.on_update(lambda _: self._guard("open", self._picked))
        self.upload = gui.add_upload_button("Upload a .ply", mime_type=".ply")
        self.upload.on_upload(lambda _: self._guard("upload", self.open_upload,
                                                    self.upload.value.name,
                                                    self.upload.value.content))
        self.layer_list = gui.add_dropdown("Layer", list(LAYERS), initial_value="semantic")
        self.layer_list.on_update(lambda _: self._guard("layer", self.show))
        self.legend = gui.add_html("")
        gui.add_markdown("**Click** a point of the scan to segment its object.")
        self.click_mode = gui.add_dropdown("Next click", CLICK_MODES,
                                           initial_value=CLICK_MODES[0])
        self.click_object = gui.add_number("Object", initial_value=1, min=1, step=1)
        self.objects = gui.add_markdown("")
        clear = gui.add_button("Clear clicks")
        clear.on_click(lambda _: self._guard("clear", self._clear))
        self.description = gui.add_text("Description", initial_value="")
        find = gui.add_button("Find description")
        find.on_click(lambda _: self._guard("text", self.describe, self.description.value))
        self.class_text = gui.add_text("Classes", initial_value="")
        find_classes = gui.add_button("Find classes")
        find_classes.on_click(lambda _: self._guard("classes", self.find_classes,
                                                    self.class_text.value))
        ply = gui.add_button("Download PLY")
        ply.on_click(lambda event: self._download(event.client, "ply"))
        summary = gui.add_button("Download JSON")
        summary.on_click(lambda event: self._download(event.client, "json"))
        self.status = gui.add_markdown("")

    def _guard(self, kind: str, action, *args) -> None:
        """Run one request under the lock; a bad prompt or upload becomes a message in the
        page, and the server keeps serving. Requests that a request makes (a dropdown's
        callback when the app sets its value) run inside it and are not timed apart."""
        start = time.perf_counter()
        with self.lock:
            self._depth += 1
            try:
                action(*args)
            except (PromptError, UploadError, ValueError) as error:
                self.say(f"⚠ {error}")
                return
            finally:
                self._depth -= 1
            if self._depth == 0:
                self.timings[kind].append(time.perf_counter() - start)

    def say(self, message: str) -> None:
        self.messages.append(message)
        self.status.content = message
        log.info("%s", message)

    # actions ----------------------------------------------------------------------------

    def _picked(self) -> None:
        name = self.scene_list.value
        if self.current is None or self.current.name != name:
            self.open(name)

    def open(self, name: str) -> SceneSession:
        if name not in self.sessions:
            if name not in self.sources:
                raise ValueError(f"no scene {name!r}")
            mesh, scene = self._read(self.sources[name])
            self.sessions[name] = SceneSession(name, mesh, scene, self.loaded)
        self.current = self.sessions[name]
        self.scene_list.options = list(self.sources)
        self.scene_list.value = name  # no effect when it is already the value
        self.show()
        self.say(f"{name}: {self.current.scene.num_points} points, "
                 f"{self.current.scene.num_superpoints} superpoints")
        return self.current

    def _read(self, source) -> tuple[Mesh, Scene]:
        if isinstance(source, tuple):  # an upload, already read
            return source
        if isinstance(source, CachedScene):  # a prepared scene: its points (no faces kept)
            scene = read_scene(source.cache / source.scene_id)
            return Mesh(scene.coords, scene.colors, np.zeros((0, 3), dtype=np.int64)), scene
        return read_scan(source, self.options.k_thresh, self.options.min_verts)

    def open_upload(self, filename: str, content: bytes) -> SceneSession:
        mesh, scene = read_upload(filename, content, self.upload_folder,
                                  int(self.options.max_upload_mb * 2**20),
                                  self.options.k_thresh, self.options.min_verts)
        name = f"upload: {filename}"
        self.sources[name] = (mesh, scene)
        self.sessions.pop(name, None)
        self._cloud_scene = None  # a new upload of the same name: new points
        return self.open(name)

    def show(self) -> None:
        session = self.current
        if session is None:
            return
        colors = session.layer(self.layer_list.value)
        if self._cloud_scene != session.name:
            self.cloud = self.server.scene.add_point_cloud(
                "/scan", session.scene.coords, colors, point_size=self.options.point_size,
                point_shape="circle")
            self._cloud_scene = session.name
        else:
            self.cloud.colors = colors
        rows = "".join(f'<div><span style="background:rgb{c};display:inline-block;width:1em;'
                       f'height:1em;margin-right:.4em"></span>{n}</div>'
                       for n, c in session.legend(self.layer_list.value))
        self.legend.content = f'<div style="font-size:0.85em">{rows}</div>'
        self.objects.content = "\n".join(
            f"- object {k + 1}: **{o['class']}** ({o['probability']:.2f}), "
            f"{o['assigned_points']} points, {len(o['clicks'])} click(s)"
            for k, o in enumerate(session.objects())) or "No objects yet."

    def switch(self, layer: str) -> None:
        """Show `layer` (its dropdown's callback shows it when the value changes)."""
        if self.layer_list.value != layer:
            self.layer_list.value = layer
        else:
            self.show()

    def _on_click(self, event) -> None:
        self._guard("click", self.click_ray, event.ray_origin, event.ray_direction)

    def click_ray(self, origin, direction, mode: str | None = None,
                  target: int | None = None) -> int:
        """A click along a camera ray: `mode` (default: the panel's) one of `CLICK_MODES`,
        `target` the object (1 = the first) a positive click adds to (default: the panel's);
        returns the object's index from 0 (-1 for a negative click)."""
        session = self.current
        if session is None:
            raise PromptError("open a scan first")
        mode = self.click_mode.value if mode is None else mode
        if mode not in CLICK_MODES:
            raise PromptError(f"unknown click mode {mode!r}; one of {', '.join(CLICK_MODES)}")
        target = int(self.click_object.value if target is None else target)
        point = nearest_on_ray(session.scene.coords, np.asarray(origin), np.asarray(direction))
        if point is None:
            raise PromptError("the click hit no point of the scan; click on the scan")
        xyz = tuple(session.scene.coords[point])
        index = session.click(xyz, target - 1 if mode == ADD else None, mode == NEGATIVE)
        self.switch("interactive")
        if index < 0:
            self.say("negative click: background there")
        else:
            obj = session.objects()[index]
            self.click_object.value = index + 1
            self.say(f"object {index + 1}: {obj['class']} ({obj['probability']:.2f}), "
                     f"{len(obj['clicks'])} click(s)")
        return index

    def _clear(self) -> None:
        if self.current is not None:
            self.current.clear_clicks()
            self.show()

    def describe(self, text: str) -> None:
        if self.current is None:
            raise PromptError("open a scan first")
        self.current.describe(text)
        self.switch("referring")
        points = int(self.current.prediction.texts.masks[0].sum())
        self.say(f"{self.current.texts[0]!r}: {points} points")

    def find_classes(self, text: str) -> None:
        if self.current is None:
            raise PromptError("open a scan first")
        self.current.find_classes(text)
        self.switch("open_vocabulary")
        found = len(self.current.prediction.open_vocab.scores)
        self.say(f"{found} instances of {', '.join(self.current.names)}")

    def _download(self, client, kind: str) -> None:
        session = self.current
        if session is None:
            return
        with self.lock:
            if kind == "ply":
                layer = self.layer_list.value
                client.send_file_download(f"{session.scene.scene_id}_{layer}.ply",
                                          session.export_ply(layer))
            else:
                client.send_file_download(f"{session.scene.scene_id}.json",
                                          session.export_json())

    def _on_connect(self, client) -> None:
        session = self.current
        if session is None:
            return
        coords = session.scene.coords
        low, high = coords.min(0), coords.max(0)
        centre = (low + high) / 2
        extent = float(np.linalg.norm(high - low))
        client.camera.up_direction = (0.0, 0.0, 1.0)
        # position first: viser moves look_at along with a new position
        client.camera.position = tuple(float(v) for v in centre + np.array(
            [0.0, -0.6, 0.8]) * extent)
        client.camera.look_at = tuple(float(v) for v in centre)

    def close(self) -> None:
        self.server.stop()
        self._uploads.cleanup()


def serve(loaded: Model, scans: list[Path], cache: Path | None, options: ServeOptions
          ) -> None:
    """Start the app and serve until interrupted."""
    if options.host not in LOCAL_HOSTS:
        log.warning("serving on %s: anyone who can reach this machine on port %d can use the "
                    "app and upload files (the default, 127.0.0.1, serves this machine only)",
                    options.host, options.port)
    app = ServeApp(loaded, scans, cache, options)
    if app.sources:
        app.open(next(iter(app.sources)))
    log.info("uniseg3d serve: open %s in a browser (Ctrl-C stops)", app.url)
    print(app.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        app.close()
