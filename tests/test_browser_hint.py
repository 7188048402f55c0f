"""In ComfyUI's page, on the page the host pins and on the newest page (Nodes 2.0 off and on): a file that is not
a sound gets AVSync Load Audio's red line inside the node, and the shipped workflow's missing-models list names the
SD1.5 checkpoint and ImageBind with their folders and download addresses.

The newest page is a `comfyui-frontend-package` folder served with `--front-end-root`: AVSYNC_NEWEST_FRONTEND names its
`static` folder, else the checkout's `.hosts/frontend-newest` (or the highest `.hosts/frontend-<version>`) is used;
without one those cases are skipped. Screenshots go to outputs/browser_screenshots_hint/.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_browser import MAIN, VIEWPORT, Page, chromium_path, unavailable

import comfy_host
from comfy_host import ComfyServer, write_clicks

pytestmark = [pytest.mark.browser, pytest.mark.host, pytest.mark.slow]

SHOTS = comfy_host.REPO_ROOT / "outputs" / "browser_screenshots_hint"
HINT_RED = np.array([0xFF, 0x6B, 0x6B])
# What the shipped workflows' model lists must make the page name (folder, file): workflows/README.md.
DECLARED = {("checkpoints", "v1-5-pruned-emaonly.safetensors"), ("imagebind", "imagebind_huge.pth")}


def newest_frontend() -> Path | None:
    """The static folder of the newest frontend package provisioned for the tests, if any."""
    env = os.environ.get("AVSYNC_NEWEST_FRONTEND")
    if env:
        path = Path(env).expanduser()
        if not (path / "index.html").is_file():
            pytest.fail(f"AVSYNC_NEWEST_FRONTEND={env} holds no frontend (index.html).", pytrace=False)
        return path

    hosts = comfy_host.REPO_ROOT / ".hosts"
    newest = hosts / "frontend-newest" / "comfyui_frontend_package" / "static"  # what scripts/setup_env.sh links
    if newest.is_dir():
        return newest

    def version(folder: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", folder.name))

    found = sorted(hosts.glob("frontend-[0-9]*/comfyui_frontend_package/static"), key=lambda p: version(p.parents[1]))
    return found[-1] if found else None


@pytest.fixture(scope="module")
def browser():
    chromium = chromium_path()
    if chromium is None:
        unavailable("Chromium not found: install Debian's package (apt-get install chromium) or set AVSYNC_CHROMIUM.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("The playwright package is missing: pip install -e '.[test]'.")
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module", params=["pinned", "newest"])
def server(request, browser, tmp_path_factory):
    extra_args: tuple[str, ...] = ()
    if request.param == "newest":
        static = newest_frontend()
        if static is None:
            pytest.skip("No newest frontend: set AVSYNC_NEWEST_FRONTEND to a comfyui_frontend_package static folder.")
        extra_args = ("--front-end-root", str(static))
    comfy_host.require_comfyui()
    work = tmp_path_factory.mktemp("hint_inputs")
    with ComfyServer(plugin=True, extra_args=extra_args) as running:
        running.page_name = request.param
        running.sound = write_clicks(work / "hint_clicks.wav")
        running.upload_input(running.sound)
        running.not_sound = work / "notes.txt"
        running.not_sound.write_text("These are notes, not a sound.\n")
        yield running


def open_page(browser, server: ComfyServer, *, nodes2: bool, models_dialog: bool) -> Page:
    status, _ = server.post_json(
        "/settings",
        {
            "Comfy.TutorialCompleted": True,
            "Comfy.Minimap.Visible": False,
            "LiteGraph.Canvas.MinFontSizeForLOD": 0,
            "Comfy.VueNodes.Enabled": nodes2,
            "Comfy.Workflow.ShowMissingModelsWarning": models_dialog,
        },
    )
    assert status == 200
    tab = browser.new_page(viewport=VIEWPORT)
    try:
        page = Page(tab, SHOTS, nodes2)  # the harness whose pages know their renderer
    except TypeError:
        page = Page(tab, SHOTS)
    tab.goto(server.url)
    tab.wait_for_function(
        "() => window.app?.graph && window.app.canvas?.canvas && app.extensions.length > 0", timeout=90_000
    )
    tab.wait_for_timeout(3000)
    assert page.js("() => app.extensions.some(e => e.name === 'AVSync.LoadAudio')"), "web/avsync.js was not loaded"
    return page


def node_rect(page: Page, node_id: int, nodes2: bool) -> dict:
    """Where the node is on the screen, title bar included."""
    if nodes2:
        return page.page.locator(f'[data-node-id="{node_id}"]').bounding_box()
    return page.js(
        """(id) => {
        const node = app.graph.getNodeById(id), title = LiteGraph.NODE_TITLE_HEIGHT;
        const [x0, y0] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - title]);
        const [x1, y1] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0], node.pos[1] + node.size[1]]);
        const rect = app.canvas.canvas.getBoundingClientRect();
        return {x: rect.left + x0, y: rect.top + y0, width: x1 - x0, height: y1 - y0};
    }""",
        node_id,
    )


def red_pixels(page: Page, box: dict) -> int:
    shot = page.page.screenshot(clip=box)
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
    return int((np.abs(pixels - HINT_RED).max(-1) < 40).sum())


@pytest.mark.parametrize("nodes2", [False, True], ids=["classic", "nodes2"])
def test_a_refused_file_is_named_in_red_inside_the_node_until_a_sound_is_chosen(browser, server, nodes2):
    if nodes2 and server.page_name == "pinned":
        pytest.skip("Nodes 2.0 is checked on the newest page (the pinned page's renderer is the classic one)")
    page = open_page(browser, server, nodes2=nodes2, models_dialog=False)
    try:
        page.load(json.loads(MAIN.read_text()))
        node_id = page.node_id("AVSyncLoadAudio")
        page.fit([node_id, page.node_id("AVSyncImageBindLoader")])
        if nodes2:
            page.page.locator(f'[data-node-id="{node_id}"] input[type=file]').set_input_files(str(server.not_sound))
        else:
            page.upload_through_button(server.not_sound)
        hint = page.page.locator(".avsync-hint")
        hint.wait_for(state="visible", timeout=20_000)
        assert hint.inner_text() == "Cannot play 'notes.txt': not a sound?"
        page.page.wait_for_timeout(500)
        name = f"hint_{server.page_name}_{'nodes2' if nodes2 else 'classic'}"
        page.screenshot(name)
        box, node = hint.bounding_box(), node_rect(page, node_id, nodes2)
        assert box["height"] >= 10, "the line has room to show"
        assert node["x"] <= box["x"] and box["x"] + box["width"] <= node["x"] + node["width"] + 1
        assert node["y"] <= box["y"] and box["y"] + box["height"] <= node["y"] + node["height"] + 1, "inside the node"
        assert red_pixels(page, box) > 50, "the line is drawn in red where it says it is"

        page.set_widget("AVSyncLoadAudio", "audio", server.sound.name)
        page.page.wait_for_function("() => !document.querySelector('.avsync-hint')", timeout=20_000)
        assert page.js("(id) => app.graph.getNodeById(id).widgets.map(w => w.name)", node_id)[-1] == "upload"
        page.screenshot(name + "_cleared")
    finally:
        page.page.close()


def test_the_missing_models_list_names_the_checkpoint_and_imagebind_with_their_sources(browser, server):
    page = open_page(browser, server, nodes2=False, models_dialog=True)
    try:
        page.load(json.loads(MAIN.read_text()))
        version = page.js("() => window.__COMFYUI_FRONTEND_VERSION__")
        panel = page.page.locator("[data-testid='missing-model-importable-rows']")
        if not page.page.locator(".p-dialog").filter(has_text="Missing Models").count():
            page.page.get_by_text("View details").first.click()  # newer pages: the Issues panel
            panel.wait_for(timeout=20_000)
            rows = panel.locator(":scope > div")
            listed = {
                (row.locator("span.block").inner_text(), row.locator("button[title]").first.get_attribute("title"))
                for row in rows.all()
            }
            links = panel.locator("button[aria-label='Copy URL']").count()
        else:  # older pages: a dialog on load, one "folder / file" line and a download button titled with the URL
            dialog = page.page.locator(".p-dialog").filter(has_text="Missing Models")
            listed = set(re.findall(r"^(\w+) / (\S+)$", dialog.inner_text(), flags=re.M))
            links = sum(
                1
                for title in dialog.locator("button[title]").evaluate_all("bs => bs.map(b => b.title)")
                if title.startswith("https://")
            )
        page.screenshot(f"models_{server.page_name}_{version}")
        assert listed == DECLARED, f"page {version}"
        assert links == len(DECLARED), "each with its download address"
    finally:
        page.page.close()
