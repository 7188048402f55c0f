"""The lean ImageBind audio encoder against the official tiny-ImageBind goldens, and its loaders."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from avsync_core.audio import ImageBindAudioConfig, ImageBindAudioEncoder, null_melspectrogram
from avsync_core.audio.imagebind.__main__ import main as convert_main
from avsync_core.errors import CheckpointError, InvalidInputError
from conftest import REPO_ROOT, assert_close_rel, golden_dir, load_golden, load_golden_json

TINY = ("imagebind_audio_tiny", "imagebind_audio_tiny.safetensors")
# The official AVSyncD audio_encoder/ names: ImageBindSegmaskAudioEncoder keeps ImageBind's audio modules as
# preprocessor / trunk / head / postprocessor and adds final_layer_norm.
AVSYNCD_PREFIXES = {
    "modality_preprocessors.audio.": "preprocessor.",
    "modality_trunks.audio.": "trunk.",
    "modality_heads.audio.": "head.",
    "modality_postprocessors.audio.": "postprocessor.",
}


@pytest.fixture(scope="module")
def tiny_heads() -> int:
    return load_golden_json("imagebind_audio_tiny", "config.json")["kwargs_audio"]["audio_num_heads"]


@pytest.fixture(scope="module")
def tiny_weights() -> dict[str, torch.Tensor]:
    return load_golden(*TINY)


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_golden("imagebind_audio_tiny", "imagebind_audio_tiny_io.safetensors")


@pytest.fixture(scope="module")
def tiny(tiny_heads) -> ImageBindAudioEncoder:
    return ImageBindAudioEncoder.from_imagebind_checkpoint(golden_dir().joinpath(*TINY), num_heads=tiny_heads)


def _outputs(encoder: ImageBindAudioEncoder, mel: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = encoder(mel)
        return {
            "preprocessor_tokens": encoder.embed(mel),
            "trunk": out.trunk,
            "trunk_final_ln": out.tokens,
            "head_cls": out.cls,
            "head_cls_post": out.cls_normalized,
            "encode_tokens": encoder.encode_tokens(mel),
        }


def _assert_matches_golden(encoder: ImageBindAudioEncoder, io: dict[str, torch.Tensor]) -> None:
    for prefix, mel in (("out.", io["in.mel"]), ("out.null_", io["in.null_mel"])):
        got = _outputs(encoder, mel)
        for name in ("preprocessor_tokens", "trunk", "trunk_final_ln", "head_cls", "head_cls_post"):
            assert_close_rel(got[name], io[prefix + name], 1e-4, prefix + name)
        assert torch.equal(got["encode_tokens"], got["trunk_final_ln"])


def _assert_same_outputs(a: ImageBindAudioEncoder, b: ImageBindAudioEncoder, mel: torch.Tensor) -> None:
    for (name, x), y in zip(_outputs(a, mel).items(), _outputs(b, mel).values()):
        assert torch.equal(x, y), name


def test_golden_from_imagebind_names_safetensors(tiny, io):
    assert tiny.config.embed_dim == 48 and tiny.config.depth == 2 and tiny.config.out_dim == 32
    assert tiny.token_dim == 48 and tiny.num_tokens == 229
    _assert_matches_golden(tiny, io)


def test_golden_from_a_pth_like_imagebind_huge(tmp_path, tiny_weights, tiny_heads, io):
    pth = tmp_path / "imagebind_tiny.pth"
    torch.save(dict(tiny_weights), pth)
    _assert_matches_golden(ImageBindAudioEncoder.from_imagebind_checkpoint(pth, num_heads=tiny_heads), io)
    _assert_matches_golden(ImageBindAudioEncoder.from_file(pth, num_heads=tiny_heads), io)


def test_null_mel_is_the_golden_null_input(io):
    assert torch.equal(null_melspectrogram(1), io["in.null_mel"])


def test_safetensors_round_trip(tmp_path, tiny, io):
    path = tmp_path / "sub" / "ib_audio.safetensors"
    tiny.save_safetensors(path)
    tiny.save_safetensors(path)  # overwriting is atomic and leaves no temporary file behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["ib_audio.safetensors"]
    loaded = ImageBindAudioEncoder.from_safetensors(path)
    assert loaded.config == tiny.config  # the head count travels in the metadata
    _assert_same_outputs(tiny, loaded, io["in.mel"])
    _assert_same_outputs(tiny, ImageBindAudioEncoder.from_file(path), io["in.mel"])


def _avsyncd_state(tiny_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in tiny_weights.items():
        prefix = next(p for p in AVSYNCD_PREFIXES if key.startswith(p))
        state[AVSYNCD_PREFIXES[prefix] + key[len(prefix) :]] = value
    state["final_layer_norm.weight"] = torch.ones(48)
    state["final_layer_norm.bias"] = torch.zeros(48)
    return state


def _write_avsyncd_checkpoint(root: Path, state: dict[str, torch.Tensor], binary: bool = False) -> Path:
    folder = root / "audio_encoder"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "_class_name": "ImageBindSegmaskAudioEncoder",
                "_diffusers_version": "0.29.2",
                "n_segment": 12,
                "pretrained_model_name": "imagebind-huge",
            }
        )
    )
    if binary:
        torch.save(state, folder / "diffusion_pytorch_model.bin")
    else:
        save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    (root / "unet").mkdir()
    (root / "unet" / "config.json").write_text(json.dumps({"_class_name": "AudioUNet3DConditionModel"}))
    return folder


@pytest.mark.parametrize("binary", [False, True], ids=["safetensors", "bin"])
def test_avsyncd_folder(tmp_path, tiny_weights, tiny_heads, tiny, io, binary):
    state = _avsyncd_state(tiny_weights)
    folder = _write_avsyncd_checkpoint(tmp_path / "ckpt", state, binary)
    for source in (tmp_path / "ckpt", folder):
        loaded = ImageBindAudioEncoder.from_avsyncd_folder(source, num_heads=tiny_heads)
        _assert_same_outputs(tiny, loaded, io["in.mel"])
    _assert_same_outputs(tiny, ImageBindAudioEncoder.from_file(tmp_path / "ckpt", num_heads=tiny_heads), io["in.mel"])
    exported = tiny.state_dict_in_layout("avsyncd")
    assert sorted(exported) == sorted(state)
    assert all(torch.equal(exported[k], state[k]) for k in state)
    imagebind = tiny.state_dict_in_layout("imagebind")
    assert sorted(imagebind) == sorted(tiny_weights)
    assert all(torch.equal(imagebind[k], tiny_weights[k]) for k in tiny_weights)


def test_avsyncd_fp16_variant_loads_as_float32(tmp_path, tiny_weights, tiny_heads, tiny, io):
    half = {k: v.half() for k, v in _avsyncd_state(tiny_weights).items()}
    folder = tmp_path / "audio_encoder"
    folder.mkdir()
    save_file(half, str(folder / "diffusion_pytorch_model.fp16.safetensors"))
    loaded = ImageBindAudioEncoder.from_avsyncd_folder(folder, num_heads=tiny_heads)
    assert loaded.dtype == torch.float32
    with torch.no_grad():
        got, ref = loaded.encode_tokens(io["in.mel"]), tiny.encode_tokens(io["in.mel"])
    assert (got - ref).abs().max() < 2e-2 * ref.abs().max()  # fp16 weights, not a golden comparison


def test_avsyncd_folder_with_a_trained_final_norm_is_refused(tmp_path, tiny_weights, tiny_heads):
    state = _avsyncd_state(tiny_weights)
    state["final_layer_norm.weight"] = torch.full((48,), 2.0)
    _write_avsyncd_checkpoint(tmp_path / "ckpt", state)
    with pytest.raises(CheckpointError, match="final_layer_norm.weight"):
        ImageBindAudioEncoder.from_avsyncd_folder(tmp_path / "ckpt", num_heads=tiny_heads)


def test_the_unet_folder_is_not_an_audio_encoder(tmp_path, tiny_weights):
    _write_avsyncd_checkpoint(tmp_path / "ckpt", _avsyncd_state(tiny_weights))
    with pytest.raises(CheckpointError, match="AudioUNet3DConditionModel"):
        ImageBindAudioEncoder.from_avsyncd_folder(tmp_path / "ckpt" / "unet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model"):
        ImageBindAudioEncoder.from_avsyncd_folder(tmp_path / "empty")


def test_real_size_layout_matches_imagebind_huge():
    hparams = load_golden_json("imagebind_huge_audio_hparams.json")
    config = ImageBindAudioConfig()
    derived = hparams["derived"]
    assert (config.embed_dim, config.depth, config.num_heads) == (
        derived["embed_dim"],
        derived["depth"],
        derived["num_heads"],
    )
    assert config.mlp_hidden == derived["mlp_hidden"] and config.num_tokens == 229
    with torch.device("meta"):
        encoder = ImageBindAudioEncoder(config)
    shapes = {k: list(v.shape) for k, v in encoder.state_dict_in_layout("imagebind").items()}
    assert shapes == hparams["state_dict_keys_and_shapes"]
    # Config inference from weights alone gives the real head count (64-wide heads).
    inferred = ImageBindAudioEncoder.from_state_dict(encoder.state_dict_in_layout("imagebind")).config
    assert inferred == config


def test_other_modalities_are_ignored_and_missing_audio_is_reported(tmp_path, tiny_weights, tiny_heads, tiny, io):
    mixed = dict(tiny_weights)
    mixed["modality_trunks.vision.blocks.0.attn.in_proj_weight"] = torch.zeros(3, 3)
    mixed["modality_heads.vision.2.weight"] = torch.zeros(2, 2)
    torch.save(mixed, tmp_path / "mixed.pth")
    _assert_same_outputs(
        tiny, ImageBindAudioEncoder.from_file(tmp_path / "mixed.pth", num_heads=tiny_heads), io["in.mel"]
    )
    vision_only = {k: v for k, v in mixed.items() if ".audio." not in k}
    torch.save(vision_only, tmp_path / "vision.pth")
    with pytest.raises(CheckpointError, match="no ImageBind audio weights"):
        ImageBindAudioEncoder.from_imagebind_checkpoint(tmp_path / "vision.pth")


def test_incomplete_and_misshapen_weights(tmp_path, tiny_weights, tiny_heads):
    missing = {k: v for k, v in tiny_weights.items() if "blocks.1.mlp.fc2" not in k}
    with pytest.raises(CheckpointError, match="Missing: blocks.1.mlp.fc2"):
        ImageBindAudioEncoder.from_state_dict(missing, num_heads=tiny_heads)
    wrong = dict(tiny_weights)
    wrong["modality_trunks.audio.blocks.0.mlp.fc2.bias"] = torch.zeros(47)
    with pytest.raises(CheckpointError, match="wrong shape.*blocks.0.mlp.fc2.bias"):
        ImageBindAudioEncoder.from_state_dict(wrong, num_heads=tiny_heads)
    with pytest.raises(CheckpointError, match="pass num_heads"):
        ImageBindAudioEncoder.from_state_dict(tiny_weights)  # 48 is not a multiple of 64-wide heads
    with pytest.raises(CheckpointError, match="not divisible"):
        ImageBindAudioEncoder.from_state_dict(tiny_weights, num_heads=5)


class _NotATensor:
    pass


def test_unreadable_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        ImageBindAudioEncoder.from_file(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        ImageBindAudioEncoder.from_file(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x01\x02" * 100)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        ImageBindAudioEncoder.from_file(tmp_path / "junk.safetensors")
    torch.save({"x": _NotATensor()}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError, match="could run code"):
        ImageBindAudioEncoder.from_file(tmp_path / "code.pth")
    (tmp_path / "weights.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="unsupported file type"):
        ImageBindAudioEncoder.from_file(tmp_path / "weights.txt")


def test_compact_file_checks_its_format(tmp_path, tiny, tiny_weights):
    save_file(dict(tiny_weights), str(tmp_path / "ib.safetensors"), metadata={"format": "something"})
    with pytest.raises(CheckpointError, match="not an AVSync ImageBind-audio file"):
        ImageBindAudioEncoder.from_safetensors(tmp_path / "ib.safetensors")
    tiny.save_safetensors(tmp_path / "ours.safetensors")
    tensors = load_file(str(tmp_path / "ours.safetensors"))
    save_file(
        tensors,
        str(tmp_path / "future.safetensors"),
        metadata={"format": "avsync.imagebind_audio", "format_version": "99", "config": "{}"},
    )
    with pytest.raises(CheckpointError, match="format version"):
        ImageBindAudioEncoder.from_safetensors(tmp_path / "future.safetensors")


def test_bad_mel_shape_is_refused(tiny):
    with pytest.raises(InvalidInputError, match=r"\(batch, 1, 128, 204\)"):
        tiny(torch.zeros(1, 128, 204))
    with pytest.raises(InvalidInputError, match=r"\(batch, 1, 128, 204\)"):
        tiny.encode_tokens(torch.zeros(2, 1, 128, 200))


class _HostOps:
    """A host's namespace of drop-in layer classes (as ComfyUI's comfy.ops is)."""

    class Linear(torch.nn.Linear):
        pass

    class LayerNorm(torch.nn.LayerNorm):
        pass

    class Conv2d(torch.nn.Conv2d):
        pass


def test_is_built_from_the_hosts_layer_classes_and_matches_the_goldens(tiny_heads, io):
    encoder = ImageBindAudioEncoder.from_file(golden_dir().joinpath(*TINY), tiny_heads, operations=_HostOps)
    host_classes = (_HostOps.Linear, _HostOps.LayerNorm, _HostOps.Conv2d)
    layers = [m for m in encoder.modules() if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Conv2d))]
    assert len(layers) == 5 * encoder.config.depth + 4 and all(isinstance(m, host_classes) for m in layers)
    _assert_matches_golden(encoder, io)


def test_raw_parameters_follow_the_input_as_a_streaming_host_leaves_them(tiny, io):
    """ComfyUI's low-VRAM mode moves the layers' weights per call but never the raw parameters of a module with
    children (packed attention projection, extra key/value, cls token, position embedding): they may sit on another
    device or in another dtype. Kept in float64 here, they are cast to the float32 input and change nothing."""
    elsewhere = ImageBindAudioEncoder(tiny.config)
    elsewhere.load_state_dict(tiny.state_dict())
    raw = [p for m in elsewhere.modules() for p in m.parameters(recurse=False) if next(m.children(), None)]
    assert len(raw) == 4 * tiny.config.depth + 2
    for p in raw:
        p.data = p.data.double()
    _assert_same_outputs(elsewhere, tiny, io["in.mel"])


def test_follows_the_encoder_dtype(tiny, io):
    half = ImageBindAudioEncoder(tiny.config)
    half.load_state_dict(tiny.state_dict())
    half = half.to(torch.bfloat16)
    with torch.no_grad():
        tokens = half.encode_tokens(io["in.mel"])
    assert tokens.dtype == torch.bfloat16 and torch.isfinite(tokens.float()).all()
    assert (tokens.float() - io["out.trunk_final_ln"]).abs().max() < 0.1 * io["out.trunk_final_ln"].abs().max()


def test_convert_command(tmp_path, tiny_weights, tiny_heads, tiny, io, capsys):
    torch.save(dict(tiny_weights), tmp_path / "imagebind.pth")
    convert_main([str(tmp_path / "imagebind.pth"), str(tmp_path / "audio.safetensors"), "--num-heads", str(tiny_heads)])
    assert "wrote" in capsys.readouterr().out
    _assert_same_outputs(tiny, ImageBindAudioEncoder.from_safetensors(tmp_path / "audio.safetensors"), io["in.mel"])


@pytest.mark.slow
def test_loading_never_reads_the_other_modalities(tmp_path, tiny_weights):
    """A .pth holding 512 MiB of other modalities: loading the audio branch stays far below that."""
    state = {f"modality_trunks.vision.blocks.{i}.mlp.fc1.weight": torch.ones(1024, 16384) for i in range(8)}
    state.update(tiny_weights)
    torch.save(state, tmp_path / "big.pth")
    del state
    script = textwrap.dedent(f"""
        import resource, sys, torch
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from avsync_core.audio import ImageBindAudioEncoder, null_melspectrogram
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        encoder = ImageBindAudioEncoder.from_imagebind_checkpoint({str(tmp_path / "big.pth")!r}, num_heads=4)
        with torch.no_grad():
            encoder.encode_tokens(null_melspectrogram(1))
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """)
    grown_mib = float(
        subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout.split()[-1]
    )
    assert grown_mib < 64, f"loading grew the process by {grown_mib:.0f} MiB"
