"""The pack in ComfyUI's own page, in headless Chromium: the shipped workflows open cleanly, a sound is uploaded
through AVSync Load Audio's button and plays, a file that is not sound is refused in the page, and Run renders the
video and Encode Audio's per-frame preview.

Runs against a real server with the pack and small random models (see test_comfy_e2e.py). Needs Debian's
`chromium` (scripts/setup_env.sh installs it as root) and the `playwright` package (the `test` extra), which drives
that binary; playwright's own browser download is never used. Without them the tests are skipped with a message,
and fail under CI=true. Screenshots of every step go to outputs/browser_screenshots/ (the path is printed).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from browser_console import harmful
from PIL import Image
from workflow_boxes import group_problems, node_boxes, overlapping_pairs

import comfy_host
import host_matrix
from comfy_host import ComfyServer, write_clicks, write_image, write_random_motion_module, write_small_imagebind

pytestmark = [pytest.mark.browser, pytest.mark.host, pytest.mark.slow]

WORKFLOWS = sorted((comfy_host.REPO_ROOT / "workflows").glob("*.json"))
MAIN = comfy_host.REPO_ROOT / "workflows" / "avsync_image_audio_to_video.json"
WHOLE_SONG = comfy_host.REPO_ROOT / "workflows" / "avsync_whole_song.json"
SCREENSHOTS = comfy_host.REPO_ROOT / "outputs" / "browser_screenshots"
FRAMES, FPS, SIZE, STEPS, SOUND_SECONDS = 4, 2.0, 64, 1, 2.0  # 4 frames at 2 fps: one 2 s clip, as trained
SONG_SECONDS, OVERLAP = 5.0, 1  # the whole-song run: 3 clips, 10 frames, 4 context windows of 3 new frames
VIEWPORT = {"width": 1920, "height": 1080}


def unavailable(message: str) -> None:
    """Skip with the reason outside CI; in CI (CI=true) a missing browser is a broken setup, so fail."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(message + " (CI=true: the browser tests must run)")
    pytest.skip(message)


def chromium_path() -> str | None:
    for candidate in (os.environ.get("AVSYNC_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        unavailable(
            "Chromium not found: install Debian's package (`apt-get install chromium`; scripts/setup_env.sh "
            "does it when run as root) or point AVSYNC_CHROMIUM at a Chromium binary."
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("The playwright package is missing: pip install -e '.[test]'.")
    return path


def say(request, line: str) -> None:
    """Print past pytest's output capture, so the reader sees it even when the test passes."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{line}", flush=True)


@pytest.fixture(scope="module")
def browser_page() -> host_matrix.Page:
    """host_matrix parametrizes this with each host's pages; without any host the tests skip (fail under CI)."""
    comfy_host.require_comfyui()
    pytest.fail("a host was found but host_matrix gave it no page")


@pytest.fixture(scope="module")
def shots(request, browser_page) -> Path:
    folder = SCREENSHOTS / f"{host_matrix.local_host().name}-{browser_page.id}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    yield folder
    say(request, f"browser screenshots in {folder}: {', '.join(sorted(p.name for p in folder.glob('*.png')))}")


@pytest.fixture(scope="module")
def server(chromium, tmp_path_factory, browser_page):
    comfy_host.require_comfyui()
    if not (browser_page.root / "index.html").is_file():
        unavailable(f"The page {browser_page.frontend} is not in {browser_page.root}: run scripts/setup_env.sh.")
    checkpoint = comfy_host.session_random_sd15_checkpoint()
    work = tmp_path_factory.mktemp("browser_models")
    with ComfyServer(plugin=True, extra_args=("--front-end-root", str(browser_page.root))) as running:
        running.files = SimpleNamespace(
            ckpt=running.add_model("checkpoints", checkpoint),
            motion=running.add_model("avsyncd", write_random_motion_module(work / "random_motion.safetensors")),
            encoder=running.add_model("imagebind", write_small_imagebind(work / "imagebind_768_1block.safetensors")),
            image=running.upload_input(write_image(work / "browser_first_frame.png")),
            sound=write_clicks(work / "browser_clicks.wav", seconds=SOUND_SECONDS),  # uploaded through the page
            song=running.upload_input(write_clicks(work / "browser_song.wav", seconds=SONG_SECONDS)),
            not_sound=work / "notes.txt",
        )
        running.files.not_sound.write_text("These are notes, not a sound.\n")
        yield running


class Page:
    """The ComfyUI page and the errors it reported since the last `take_errors()`."""

    def __init__(self, page, shots: Path, nodes2: bool):
        self.page, self.shots, self.nodes2, self.errors = page, shots, nodes2, []
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("response", lambda r: self.errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)

    def take_errors(self) -> list[str]:
        """The errors since the last call, less the named harmless host lines (browser_console.py)."""
        errors, self.errors = self.errors, []
        return harmful(errors)

    def js(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def load(self, workflow: dict) -> None:
        self.js("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        self.page.wait_for_timeout(1500)  # DOM widgets and previews settle

    def node_id(self, node_type: str) -> int:
        (node_id,) = self.js("(t) => app.graph._nodes.filter(n => n.type === t).map(n => n.id)", node_type)
        return node_id

    def set_widget(self, node_type: str, name: str, value) -> None:
        self.js(
            """([t, name, value]) => {
            const node = app.graph._nodes.find(n => n.type === t);
            const widget = node.widgets.find(w => w.name === name);
            widget.value = value;
            widget.callback?.(value);
        }""",
            [node_type, name, value],
        )

    def rendered_workflow(self) -> tuple[dict, float]:
        """Nodes and groups as the page holds them now (sizes after the frontend fitted the widgets)."""
        return self.js("""() => ({
            nodes: app.graph._nodes.map(n => ({id: n.id, type: n.type, title: n.title, pos: [...n.pos],
                                              size: [...n.size]})),
            groups: app.graph._groups.map(g => ({title: g.title, bounding: [...g._bounding], font_size: g.font_size})),
        })"""), self.js("() => LiteGraph.NODE_TITLE_HEIGHT")

    def fit(self, node_ids: list[int] | None = None, margin: float = 40) -> None:
        """Zoom the canvas onto some nodes (all by default)."""
        self.js(
            """([ids, margin]) => {
            const nodes = app.graph._nodes.filter(n => !ids || ids.includes(n.id));
            const title = LiteGraph.NODE_TITLE_HEIGHT;
            const x0 = Math.min(...nodes.map(n => n.pos[0])) - margin;
            const y0 = Math.min(...nodes.map(n => n.pos[1] - title)) - margin;
            const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0])) + margin;
            const y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1])) + margin;
            const canvas = app.canvas.canvas, ds = app.canvas.ds;
            const width = canvas.clientWidth, height = canvas.clientHeight;
            ds.scale = Math.min(width / (x1 - x0), height / (y1 - y0), 1.5);
            ds.offset[0] = -x0 + (width / ds.scale - (x1 - x0)) / 2;
            ds.offset[1] = -y0 + (height / ds.scale - (y1 - y0)) / 2;
            app.canvas.setDirty(true, true);
        }""",
            [node_ids, margin],
        )
        self.page.wait_for_timeout(400)

    def screenshot(self, name: str) -> None:
        """Half size: enough to read the nodes, small enough to keep."""
        image = Image.open(io.BytesIO(self.page.screenshot()))
        image.resize((image.width // 2, image.height // 2), Image.LANCZOS).save(
            self.shots / f"{name}.png", optimize=True
        )

    def widget_centre(self, node_type: str, widget_name: str) -> tuple[float, float]:
        """Where a canvas-drawn widget of a node is on the screen."""
        return tuple(
            self.js(
                """([t, name]) => {
            const node = app.graph._nodes.find(n => n.type === t);
            const widget = node.widgets.find(w => w.name === name);
            const height = widget.computeSize?.(node.size[0])?.[1] ?? LiteGraph.NODE_WIDGET_HEIGHT;
            const [x, y] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2,
                                                                 node.pos[1] + widget.last_y + height / 2]);
            const rect = app.canvas.canvas.getBoundingClientRect();
            return [rect.left + x, rect.top + y];
        }""",
                [node_type, widget_name],
            )
        )

    def upload_through_button(self, path: Path) -> None:
        """Click AVSync Load Audio's upload control as an artist would: the canvas button, or with Nodes 2.0 the
        upload icon of the audio widget, and pick the file."""
        with self.page.expect_file_chooser() as chooser:
            if self.nodes2:
                self.node_element("AVSyncLoadAudio").locator("[data-widget-name='audio'] label").click()
            else:
                self.page.mouse.click(*self.widget_centre("AVSyncLoadAudio", "upload"))
        chooser.value.set_files(str(path))

    def node_element(self, node_type: str):
        """The node as a page element (Nodes 2.0 draws each node as one)."""
        return self.page.locator(f"[data-node-id='{self.node_id(node_type)}']")

    @property
    def player(self) -> str:
        """A script expression for AVSync Load Audio's player the artist sees: the player widget's element, or
        with Nodes 2.0 the node's own audio element (the widget's element is then not on the page)."""
        if self.nodes2:
            return (
                "document.querySelector(`[data-node-id='${app.graph._nodes.find(n => n.type === 'AVSyncLoadAudio')"
                ".id}'] [data-widget-name='audioUI'] audio`)"
            )
        return (
            "app.graph._nodes.find(n => n.type === 'AVSyncLoadAudio').widgets.find(w => w.name === 'audioUI').element"
        )

    def shows_image(self, node_type: str, filename: str) -> bool:
        """Whether the node shows the picture `filename` (a `ui` image): loaded into the node's images, which the
        classic renderer draws on the canvas, or with Nodes 2.0 an image element inside the node."""
        if self.nodes2:
            image = self.node_element(node_type).locator(f"img[src*='{filename}']")
            return image.count() > 0 and image.first.is_visible() and image.first.evaluate("i => i.naturalWidth") > 0
        return self.js(
            """([t, name]) => (app.graph._nodes.find(n => n.type === t).imgs ?? [])
            .some(i => i.src.includes(name) && i.complete && i.naturalWidth > 0)""",
            [node_type, filename],
        )

    def hint_shown(self, node_type: str, text: str) -> bool:
        """Whether the node shows `text` itself: web/avsync.js adds the hint to the node as a page element
        (`.avsync-hint`), inside the node's element with Nodes 2.0 and over the canvas in the classic renderer."""
        scope = self.node_element(node_type) if self.nodes2 else self.page
        hint = scope.locator(".avsync-hint").get_by_text(text)
        return hint.count() > 0 and hint.first.is_visible()


@pytest.fixture(scope="module")
def page(server, chromium, shots, browser_page):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"]
        )
        try:
            # A new user would first see the template gallery, a minimap hides part of the canvas, and zoomed-out
            # overview screenshots would drop all text (level of detail); turn the three off.
            status, _ = server.post_json(
                "/settings",
                {
                    "Comfy.TutorialCompleted": True,
                    "Comfy.Minimap.Visible": False,
                    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
                    "Comfy.VueNodes.Enabled": browser_page.nodes2,  # Nodes 2.0: nodes drawn as page elements
                    # The workflows name their models for the page's missing-models dialog, which would cover the
                    # canvas (test_browser_hint.py checks it).
                    "Comfy.Workflow.ShowMissingModelsWarning": False,
                },
            )
            assert status == 200
            tab = browser.new_page(viewport=VIEWPORT)
            ui = Page(tab, shots, browser_page.nodes2)
            tab.goto(server.url)
            tab.wait_for_function(
                "() => window.app?.graph && window.app.canvas?.canvas && window.LiteGraph && app.extensions.length > 0",
                timeout=90_000,
            )
            tab.wait_for_timeout(3000)  # the extensions and settings finish loading
            # Startup noise of a fresh user folder (no settings or workflows saved yet) is not the pack's business.
            ui.startup_errors = ui.take_errors()
            yield ui
        finally:
            browser.close()


def extension_loaded(page: Page) -> bool:
    return page.js("() => app.extensions.some(e => e.name === 'AVSync.LoadAudio')")


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_shipped_workflow_opens_with_known_nodes_no_errors_and_no_overlaps(page, path):
    assert extension_loaded(page), "web/avsync.js was not loaded (WEB_DIRECTORY)"
    workflow = json.loads(path.read_text())
    page.load(workflow)
    page.fit()
    page.screenshot(f"01_open_{path.stem}")
    missing = page.js(
        "(types) => types.filter(t => !(t in LiteGraph.registered_node_types))",
        sorted({n["type"] for n in workflow["nodes"]}),
    )
    assert missing == []
    assert page.take_errors() == []
    rendered, title_height = page.rendered_workflow()
    assert len(rendered["nodes"]) == len(workflow["nodes"])
    boxes = node_boxes(rendered, title_height)
    assert overlapping_pairs(boxes) == [], "nodes drawn over each other"
    assert group_problems(rendered, boxes) == []


def test_upload_a_sound_through_the_button_selects_and_plays_it(page, server):
    page.load(json.loads(MAIN.read_text()))
    load_audio = page.node_id("AVSyncLoadAudio")
    page.fit([load_audio, page.node_id("AVSyncImageBindLoader")])
    page.screenshot("02_load_audio_before_upload")
    sound = server.files.sound
    page.upload_through_button(sound)
    page.page.wait_for_function(
        """(name) => app.graph._nodes.find(n => n.type === 'AVSyncLoadAudio')
        .widgets.find(w => w.name === 'audio').value === name""",
        arg=sound.name,
        timeout=20_000,
    )
    assert (server.input_dir / sound.name).read_bytes() == sound.read_bytes(), "the upload lands in input/"
    player = page.player
    page.page.wait_for_function(f"() => {player}?.readyState >= 1", timeout=20_000)
    src, duration = page.js(f"() => [{player}.src, {player}.duration]")
    assert f"filename={sound.name}" in src and "type=input" in src
    assert duration == pytest.approx(SOUND_SECONDS, abs=0.05)
    page.js(f"async () => {{ const a = {player}; a.muted = true; await a.play(); }}")
    page.page.wait_for_function(f"() => {player}.currentTime > 0.2", timeout=20_000)
    page.js(f"() => {{ const a = {player}; a.pause(); a.currentTime = 0; }}")
    assert page.js("() => app.graph._nodes.find(n => n.type === 'AVSyncLoadAudio').avsyncAudioError ?? null") is None
    page.page.wait_for_timeout(300)
    page.screenshot("03_load_audio_after_upload")
    assert page.take_errors() == []


def test_a_file_that_is_not_sound_gets_a_clear_error_and_the_server_keeps_serving(page, server):
    page.upload_through_button(server.files.not_sound)
    toast = page.page.get_by_text("The page cannot play 'notes.txt'", exact=False).first
    toast.wait_for(timeout=20_000)
    message = page.js("() => app.graph._nodes.find(n => n.type === 'AVSyncLoadAudio').avsyncAudioError")
    assert message == "Cannot play 'notes.txt': not a sound?"
    page.page.wait_for_timeout(800)  # the notification has faded in
    page.screenshot("04_not_a_sound_refused")
    assert page.hint_shown("AVSyncLoadAudio", message), "the node itself shows the refusal, in either renderer"
    assert server.get_json("/system_stats")["system"]["comfyui_version"], "the server still answers"
    assert page.take_errors() == []  # the refusal is the node's message and the notification, not a page error
    page.set_widget("AVSyncLoadAudio", "audio", server.files.sound.name)
    page.page.wait_for_function(
        """() => !app.graph._nodes.find(n => n.type === 'AVSyncLoadAudio').avsyncAudioError""", timeout=20_000
    )  # a playable choice clears the message


def run_in_page(page: Page, server, request, timeout: float = 240) -> dict:
    """Press the page's Run button and wait for the run; its history entry (raises with the node's error).
    The server answers slowly while it samples on a loaded machine, so each poll may take up to two minutes."""

    def history() -> set[str]:
        return set(server.get_json("/history", timeout=120))

    before = history()
    page.page.locator("[data-testid='queue-button']").first.click()
    started = time.monotonic()
    deadline = started + timeout
    while not (history() - before):
        assert time.monotonic() < deadline, f"no run finished; page errors {page.take_errors()}\n{server.log_tail(60)}"
        queue = server.get_json("/queue", timeout=120)
        idle = not queue["queue_running"] and not queue["queue_pending"]
        if idle and time.monotonic() > started + 15 and not history() - before:
            pytest.fail(f"Run queued nothing: {page.take_errors()}\n{server.log_tail(60)}")
        time.sleep(1)
    (prompt_id,) = history() - before
    entry = server.wait_for(prompt_id, timeout=30)  # raises with the node's error if the run failed
    took = re.findall(r"Prompt executed in ([\d.]+ \w+)", server.log_text())
    if took:
        say(request, f"the workflow ran in the page in {took[-1]}")
    return entry


def tiny_run_widgets(files) -> list[tuple[str, str, object]]:
    """(node type, widget, value) that make a shipped workflow run on the tiny models at the tests' size."""
    return [
        ("CheckpointLoaderSimple", "ckpt_name", files.ckpt),
        ("AVSyncMotionModuleLoader", "motion_module", files.motion),
        ("AVSyncImageBindLoader", "encoder_name", files.encoder),
        ("LoadImage", "image", files.image),
        ("ImageScale", "width", SIZE),
        ("ImageScale", "height", SIZE),
        ("AVSyncEncodeAudio", "frames", FRAMES),
        ("AVSyncEncodeAudio", "fps", FPS),
    ]


def shown_pixels(page, server, shown: dict) -> np.ndarray:
    """The RGB pixels of a picture a node shows (an entry of its ``images`` output), as the page fetches it."""
    response = page.page.request.get(
        f"{server.url}/api/view?filename={shown['filename']}&type={shown['type']}&subfolder={shown['subfolder']}"
    )
    assert response.ok
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def test_run_renders_the_video_and_encode_audio_shows_one_band_per_frame(page, server, request):
    from avsync_core.audio import clip_windows
    from avsync_core.audio.preview import band_colour, padding_colour, preview_layout

    files = server.files
    if not (server.input_dir / files.sound.name).is_file():  # when run alone
        server.upload_input(files.sound)
    page.load(json.loads(MAIN.read_text()))
    for node_type, name, value in [
        *tiny_run_widgets(files),
        ("AVSyncEncodeAudio", "max_windows", 1),
        ("CreateVideo", "fps", FPS),
        ("AVSyncSampler", "steps", STEPS),
        ("AVSyncLoadAudio", "audio", files.sound.name),
    ]:
        page.set_widget(node_type, name, value)
    run_in_page(page, server, request)
    save_video, encode = page.node_id("SaveVideo"), page.node_id("AVSyncEncodeAudio")
    page.fit()  # Save Video's player is created once the node is on screen
    page.page.locator("video[src*='avsync']").first.wait_for(state="attached", timeout=30_000)
    page.page.wait_for_function(
        "() => [...document.querySelectorAll('video')].some(v => v.readyState >= 1)", timeout=30_000
    )
    outputs = page.js("(id) => app.nodeOutputs[String(id)] ?? null", encode)
    assert outputs and len(outputs["images"]) == 1, outputs
    page.fit()
    page.screenshot("05_after_run_whole_graph")
    page.fit([save_video])
    page.screenshot("06_save_video_preview")
    page.fit([encode])
    page.screenshot("07_encode_audio_preview")

    shown = outputs["images"][0]
    image = shown_pixels(page, server, shown)
    windows = clip_windows(SOUND_SECONDS, FRAMES, FPS, 1)
    layout = preview_layout(windows, FRAMES, FPS)
    assert image.shape == (layout.height, layout.width, 3) and image.std() > 10
    bands = []
    for frame in range(FRAMES):
        top, bottom = layout.lane(frame)
        row = image[(top + bottom) // 2]
        hit = np.any([np.all(row == colour, axis=1) for colour in (band_colour(frame), padding_colour(frame))], axis=0)
        bands.append(int(np.count_nonzero(np.diff(np.concatenate([[0], hit.astype(np.int8), [0]])) == 1)))
    assert bands == [1] * FRAMES, f"one shaded band in each frame's lane, got {bands}"

    rendered, title_height = page.rendered_workflow()
    boxes = node_boxes(rendered, title_height)
    assert overlapping_pairs(boxes) == [] and group_problems(rendered, boxes) == []
    assert page.take_errors() == []


def test_the_whole_song_workflow_runs_in_context_windows_and_the_sampler_shows_them(page, server, request):
    import av
    import torch

    from avsync_core.audio import AudioCondition, clip_windows
    from avsync_core.audio.preview import band_colour
    from avsync_core.sampling.context import context_schedule
    from avsync_core.sampling.context_preview import context_layout, window_spans

    files = server.files
    page.load(json.loads(WHOLE_SONG.read_text()))
    assert page.take_errors() == []
    for node_type, name, value in [
        *tiny_run_widgets(files),
        ("CreateVideo", "fps", FPS),
        ("AVSyncSampler", "steps", STEPS),
        ("AVSyncSampler", "overlap", OVERLAP),
        ("AVSyncLoadAudio", "audio", files.song),
    ]:
        page.set_widget(node_type, name, value)
    long_sound = page.js(
        "() => app.graph._nodes.find(n => n.type === 'AVSyncSampler').widgets.find(w => w.name === 'long_sound').value"
    )
    assert long_sound == "context", "the shipped workflow samples in context windows"
    entry = run_in_page(page, server, request, timeout=600)  # 4 windows: about 1 min on a free 2-core machine

    clips = clip_windows(SONG_SECONDS, FRAMES, FPS)
    total = 1 + len(clips) * (FRAMES - 1)
    (video,) = [p for p in server.output_files(entry) if p.suffix == ".mp4"]
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == total, "one video frame per frame of the whole sound"

    sampler = page.node_id("AVSyncSampler")
    outputs = page.js("(id) => app.nodeOutputs[String(id)] ?? null", sampler)
    assert outputs and len(outputs["images"]) == 1, outputs
    shown = outputs["images"][0]
    page.fit([sampler])
    page.page.wait_for_timeout(500)
    deadline = time.monotonic() + 20
    while not page.shows_image("AVSyncSampler", shown["filename"]):
        assert time.monotonic() < deadline, "the sampler does not show its context-window picture"
        page.page.wait_for_timeout(250)
    page.screenshot("08_whole_song_sampler_context_windows")
    page.fit()
    page.screenshot("09_whole_song_after_run")

    image = shown_pixels(page, server, shown)
    audio = AudioCondition(torch.zeros(len(clips), 1, 1), None, None, FRAMES, FPS, clips)  # clips count here
    windows = context_schedule(total, FRAMES, OVERLAP)
    layout = context_layout(audio, window_spans(audio, windows))
    assert image.shape == (layout.height, layout.width, 3)
    bars = []
    for k, window in enumerate(windows):  # each window's frame bar, read back at its frames
        top, bottom = layout.frame_rows(k)
        hit = np.all(image[(top + bottom) // 2] == band_colour(k), axis=1).astype(np.int8)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], hit, [0]])))
        bars.append(list(zip(edges[::2].tolist(), edges[1::2].tolist())))
    expected = [[(layout.frame_columns(w[1])[0], layout.frame_columns(w[-1])[1])] for w in windows]
    assert bars == expected, f"{len(windows)} windows at frames {[(w[1], w[-1]) for w in windows]}"

    rendered, title_height = page.rendered_workflow()  # the picture fits the sampler's room in the layout
    boxes = node_boxes(rendered, title_height)
    assert overlapping_pairs(boxes) == [] and group_problems(rendered, boxes) == [], [
        n for n in rendered["nodes"] if n["type"] == "AVSyncSampler"
    ]
    assert page.take_errors() == []
