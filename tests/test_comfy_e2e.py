"""End to end on a real headless ComfyUI: the shared workflows load against the server's nodes, and the
image + sound workflow renders an mp4 with its sound.

The server (main.py --cpu) gets random-weight models written for the test: a full-shape SD1.5 checkpoint (so
ComfyUI detects SD1.5), a full-size AVSyncD motion module and an ImageBind audio branch of the real token width
(768) but one block. The API-format workflow is posted over HTTP, patched only for these file names and for a
quick CPU run (64x64 pixels, 4 frames, 2 steps). Host tests: skipped with a message without a ComfyUI checkout.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import comfy_host
from comfy_host import ComfyServer, write_clicks, write_image, write_random_motion_module, write_small_imagebind

pytestmark = [pytest.mark.host, pytest.mark.slow]

WORKFLOWS = comfy_host.REPO_ROOT / "workflows"
MAIN_WORKFLOW = "avsync_image_audio_to_video"
UI_WORKFLOWS = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # nodes that live in the browser only (no Python class)
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Combo widgets listing the user's own files (models, inputs): the workflows carry documented placeholder names.
FILE_INPUTS = {"ckpt_name", "motion_module", "encoder_name", "image", "audio", "classifier_name"}
BYPASSED = 4  # node mode: ComfyUI skips the node; its API export leaves it out
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
FRAMES, FPS, SIZE, STEPS = 4, 2.0, 64, 2  # 4 frames over the encoder's 2 s window


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    comfy_host.require_comfyui()
    checkpoint = comfy_host.session_random_sd15_checkpoint()
    work = tmp_path_factory.mktemp("e2e_models")
    motion = write_random_motion_module(work / "random_motion.safetensors")
    encoder = write_small_imagebind(work / "imagebind_768_1block.safetensors")
    with ComfyServer(plugin=True) as running:
        running.files = SimpleNamespace(
            ckpt=running.add_model("checkpoints", checkpoint),
            motion=running.add_model("avsyncd", motion),
            encoder=running.add_model("imagebind", encoder),
            image=running.upload_input(write_image(work / "e2e_first_frame.png")),
            audio=running.upload_input(write_clicks(work / "e2e_clicks.wav")),
        )
        yield running


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


def load_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def load_api_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}_api.json").read_text())


def set_inputs(prompt: dict, class_type: str, **values) -> None:
    (node,) = [n for n in prompt.values() if n["class_type"] == class_type]
    unknown = set(values) - set(node["inputs"])
    assert not unknown, f"{class_type} has no inputs {unknown}"
    node["inputs"].update(values)


@pytest.mark.parametrize("name", [MAIN_WORKFLOW, "avsync_custom_sampling"])
def test_api_workflow_renders_an_mp4_with_sound(server, name):
    import av

    files = server.files
    prompt = load_api_workflow(name)
    set_inputs(prompt, "CheckpointLoaderSimple", ckpt_name=files.ckpt)
    set_inputs(prompt, "AVSyncMotionModuleLoader", motion_module=files.motion)
    set_inputs(prompt, "AVSyncImageBindLoader", encoder_name=files.encoder)
    set_inputs(prompt, "LoadImage", image=files.image)
    set_inputs(prompt, "ImageScale", width=SIZE, height=SIZE)
    set_inputs(prompt, "AVSyncEncodeAudio", frames=FRAMES, fps=FPS, max_windows=1)
    set_inputs(prompt, "CreateVideo", fps=FPS)
    set_inputs(prompt, "SaveVideo", filename_prefix=f"video/{name}_e2e")
    if name == MAIN_WORKFLOW:  # the all-in-one AVSync Sampler, sound from AVSync Load Audio
        set_inputs(prompt, "AVSyncLoadAudio", audio=files.audio)
        set_inputs(prompt, "AVSyncSampler", steps=STEPS)
    else:  # core SamplerCustomAdvanced with the AVSync Guider, sound from core Load Audio
        set_inputs(prompt, "LoadAudio", audio=files.audio)
        set_inputs(prompt, "AVSyncOfficialSchedule", steps=STEPS)

    entry = server.run_prompt(prompt, timeout=900)
    (video_file,) = server.output_files(entry)
    assert video_file.suffix == ".mp4" and video_file.name.startswith(f"{name}_e2e")
    with av.open(str(video_file)) as container:
        (video,) = container.streams.video
        (sound,) = container.streams.audio
        assert (video.codec_context.width, video.codec_context.height) == (SIZE, SIZE)
        assert video.average_rate == FPS
        assert sum(1 for _ in container.decode(video=0)) == FRAMES
        assert sound.codec_context.name == "aac" and sound.codec_context.sample_rate == 22050
    log = server.log_text()
    assert "IMPORT FAILED" not in log and "unet missing" not in log


def test_negative_audio_guidance_is_rejected_naming_the_input(server):
    prompt = load_api_workflow(MAIN_WORKFLOW)
    set_inputs(prompt, "AVSyncSampler", audio_guidance=-1.0)
    status, reply = server.post_json("/prompt", {"prompt": prompt})
    assert status == 400
    (sampler_id,) = [k for k, v in prompt.items() if v["class_type"] == "AVSyncSampler"]
    errors = reply["node_errors"][sampler_id]["errors"]
    assert {e["type"] for e in errors} == {"custom_validation_failed"}  # the pack's VALIDATE_INPUTS, at queue time
    assert "audio_guidance must be between 0 and 30, got -1.0" in errors[0]["details"]


def test_the_pack_offers_its_ui_workflows_as_templates(server):
    templates = server.get_json("/api/workflow_templates")
    assert sorted(templates[comfy_host.PLUGIN_FOLDER_NAME]) == UI_WORKFLOWS
    assert MAIN_WORKFLOW in UI_WORKFLOWS, "the API twins live in workflows/api/, which the template list ignores"


def _widget_names(spec: dict) -> list[tuple[str, str]]:
    """The frontend's widgets_values layout: (input name, role) in input order, with the extra control and
    upload entries it saves after some widgets. An audio upload's player and button are inputs the frontend adds
    at the end of the required ones, so their (empty) entries follow the last required widget."""
    names, audio_upload = [], []
    for section in ("required", "optional"):
        for name in spec["input_order"].get(section, []):
            input_spec = spec["input"][section][name]
            kind, options = input_spec[0], (input_spec[1] if len(input_spec) > 1 else {})
            if not (isinstance(kind, list) or kind in WIDGET_TYPES) or options.get("forceInput"):
                continue
            names.append((name, "value"))
            if kind == "INT" and options.get("control_after_generate", name in ("seed", "noise_seed")):
                names.append((name, "control"))
            if options.get("image_upload"):
                names.append((name, "upload"))
            if options.get("audio_upload"):
                audio_upload = [(name, "preview"), (name, "upload")]
        if section == "required":
            names += audio_upload
    return names


def _check_widget(node_type: str, name: str, input_spec: list, value) -> None:
    kind, options = input_spec[0], (input_spec[1] if len(input_spec) > 1 else {})
    where = f"{node_type}.{name} = {value!r}"
    if isinstance(kind, list) or kind == "COMBO":
        choices = kind if isinstance(kind, list) else options["options"]
        assert isinstance(value, str), where
        assert value in choices or name in FILE_INPUTS, f"{where} is not one of {choices[:12]}"
        return
    if kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
    elif kind == "STRING":
        assert isinstance(value, str), where
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), where
    if "min" in options:
        assert value >= options["min"], where
    if "max" in options:
        assert value <= options["max"], where


def _input_spec(spec: dict, name: str) -> list:
    for section in ("required", "optional"):
        if name in spec["input"].get(section, {}):
            return spec["input"][section][name]
    raise AssertionError(f"{spec['name']} has no input {name}")


@pytest.mark.parametrize("name", UI_WORKFLOWS)
def test_ui_workflow_fits_the_servers_nodes_and_matches_its_api_twin(object_info, name):
    workflow = load_workflow(name)
    assert workflow["version"] == 0.4
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    assert workflow["last_node_id"] >= max(nodes) and workflow["last_link_id"] >= max(links)
    assert sorted(n["order"] for n in nodes.values()) == list(range(len(nodes)))

    derived_api = {}
    for node_id, node in nodes.items():
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node["type"] in object_info, f"node {node_id}: {node['type']} is not a node type of this ComfyUI"
        spec = object_info[node["type"]]
        api_inputs = {}

        widgets = _widget_names(spec)
        assert len(node["widgets_values"]) == len(widgets), f"node {node_id} ({node['type']}): widgets {widgets}"
        for (input_name, role), value in zip(widgets, node["widgets_values"]):
            if role == "control":
                assert value in CONTROL_VALUES, (node_id, value)
            elif role == "value":
                _check_widget(node["type"], input_name, _input_spec(spec, input_name), value)
                api_inputs[input_name] = value

        sockets = [
            (name_, section)
            for section in ("required", "optional")
            for name_ in spec["input_order"].get(section, [])
            if name_ not in {w for w, _ in widgets}
        ]
        assert [i["name"] for i in node["inputs"]] == [s for s, _ in sockets], (
            f"node {node_id} ({node['type']}) sockets"
        )
        for socket, (socket_name, section) in zip(node["inputs"], sockets):
            assert socket["type"] == _input_spec(spec, socket_name)[0], (node_id, socket_name)
            assert (socket.get("shape") == 7) == (section == "optional"), (node_id, socket_name)
            if socket["link"] is None:
                assert section == "optional", (
                    f"node {node_id} ({node['type']}): required input {socket_name} is not connected"
                )
                continue
            _, source, source_slot, target, target_slot, link_type = links[socket["link"]]
            assert (target, node["inputs"][target_slot]["name"], link_type) == (node_id, socket_name, socket["type"]), (
                f"link {socket['link']} does not end at node {node_id}.{socket_name} with type {socket['type']}"
            )
            source_spec = object_info[nodes[source]["type"]]
            assert source_spec["output"][source_slot] == link_type, f"link {socket['link']} carries the wrong type"
            assert socket["link"] in nodes[source]["outputs"][source_slot]["links"]
            api_inputs[socket_name] = [str(source), source_slot]

        outputs = [(o["name"], o["type"]) for o in node["outputs"]]
        assert outputs == list(zip(spec["output_name"], spec["output"])), f"node {node_id} ({node['type']}) outputs"
        if node["mode"] != BYPASSED:
            derived_api[str(node_id)] = {"class_type": node["type"], "inputs": api_inputs}

    for link_id, source, source_slot, target, _, _ in links.values():
        assert link_id in (nodes[source]["outputs"][source_slot]["links"] or []), f"link {link_id} is dangling"
    twin = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in load_api_workflow(name).items()}
    assert derived_api == twin, f"{name}.json and api/{name}_api.json describe different graphs"
