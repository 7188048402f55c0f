"""FID, FVD, IA and IT against ``golden/paper_eval/`` (the official ASVA evaluation code's outputs), within the
golden README's recommended tolerances."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from avsync_core.audio import melspectrogram
from avsync_core.evaluation import ImageBindImageAudio
from avsync_core.evaluation.clip_similarity import FrameSimilarities, frame_similarities
from avsync_core.evaluation.fid import FIDInception, preprocess_fid
from avsync_core.evaluation.frechet import FeatureStats, frechet_distance
from avsync_core.evaluation.fvd import fvd_features, load_detector, preprocess_fvd
from avsync_core.evaluation.imagebind_text import ImageBindTextEncoder, tokenize
from avsync_core.evaluation.paper_table import mean_std
from avsync_core.evaluation.preprocess import preprocess_video
from conftest import golden_dir
from eval_models import write_fid_inception

PREPROCESSED_ABS = 1e-5
FEATURES_REL = 1e-4
SIMS_ABS = 2e-4
FRECHET_REL = 1e-5
FVD_REL = 1e-3


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def paper():
    folder = golden_dir() / "paper_eval"
    return folder, load_file(folder / "paper_eval.safetensors"), json.loads((folder / "paper_eval.json").read_text())


@pytest.mark.parametrize("case", ["wc", "rd"])
def test_frechet_distance_of_the_stored_sets(paper, case):
    _, t, meta = paper
    value = frechet_distance(FeatureStats.of(t[f"in.frechet_{case}_x1"]), FeatureStats.of(t[f"in.frechet_{case}_x2"]))
    assert value == pytest.approx(meta["frechet"][case]["frechet_distance"], rel=FRECHET_REL)


def test_frechet_statistics_accumulate_batch_by_batch(paper):
    _, t, _ = paper
    x = t["in.frechet_wc_x1"].double().numpy()
    stats = FeatureStats()
    for start in range(0, 300, 70):
        stats.add(t["in.frechet_wc_x1"][start : start + 70])
    assert np.allclose(stats.mean, x.mean(0), rtol=0, atol=1e-12)
    assert np.allclose(stats.cov, np.cov(x, rowvar=False), rtol=0, atol=1e-12)


def test_fvd_through_the_torchscript_stand_in(paper):
    folder, t, meta = paper
    detector = load_detector(folder / "i3d_stand_in.pt")
    gt = (t["in.fvd_gt_videos_u8"].float() / 255).permute(0, 2, 1, 3, 4)
    gen = (t["in.fvd_gen_videos_u8"].float() / 255).permute(0, 2, 1, 3, 4)
    for videos, key in ((gt, "gt"), (gen, "gen")):
        frames = preprocess_fvd(videos[:1])[:, :, [0, 11]]
        assert (frames - t[f"out.fvd_{key}_clip0_preprocessed_frames"]).abs().max() <= PREPROCESSED_ABS
    gt_features = torch.cat([fvd_features(detector, gt[i : i + 4]) for i in range(0, 16, 4)])  # eval.py's batches
    gen_features = torch.cat([fvd_features(detector, gen[i : i + 1]) for i in range(16)])
    assert _rel(gt_features, t["out.fvd_gt_features"]) <= FEATURES_REL
    assert _rel(gen_features, t["out.fvd_gen_features"]) <= FEATURES_REL
    from_stored = frechet_distance(
        FeatureStats.of(t["out.fvd_gt_features"]), FeatureStats.of(t["out.fvd_gen_features"])
    )
    assert from_stored == pytest.approx(meta["fvd"]["fvd"], rel=FRECHET_REL)
    recomputed = frechet_distance(FeatureStats.of(gt_features), FeatureStats.of(gen_features))
    assert recomputed == pytest.approx(meta["fvd"]["fvd"], rel=FVD_REL)


def test_fid_inception_names_and_shapes_are_pytorch_fids(paper):
    _, _, meta = paper
    with torch.device("meta"):
        state = FIDInception().net.state_dict()
    expected = meta["fid"]["state_dict_loaded"]
    assert sorted(state) == sorted(expected)
    assert all(
        list(state[k].shape) == shape and str(state[k].dtype) == f"torch.{dtype}"
        for k, (shape, dtype) in expected.items()
    )


@pytest.mark.slow
def test_fid_preprocessing_blocks_and_features(paper, tmp_path):
    _, t, _ = paper
    model = FIDInception.from_file(write_fid_inception(tmp_path / "fid_inception.pth"))
    pre = preprocess_fid(t["in.fid_frames"])
    assert (pre - t["out.fid_preprocessed"]).abs().max() <= PREPROCESSED_ABS
    with torch.no_grad():
        blocks = model.blocks(t["out.fid_preprocessed"])
    for index in range(3):
        assert _rel(blocks[index].mean(dim=(2, 3)), t[f"out.fid_block{index}_spatial_mean"]) <= FEATURES_REL
    assert _rel(model.features(t["in.fid_frames"]), t["out.fid_features"]) <= FEATURES_REL


def test_imagebind_text_tokens_embeddings_and_ia_it(paper):
    folder, t, meta = paper
    texts = meta["clip"]["texts"]
    tiny = folder / "imagebind_tiny.safetensors"
    image_audio = ImageBindImageAudio.from_file(tiny, vision_heads=2, audio_heads=4)
    text = ImageBindTextEncoder.from_file(tiny, heads=2)
    assert torch.equal(tokenize(texts), t["out.clip_text_tokens"])
    mels = torch.stack([melspectrogram(w.clone()) for w in t["in.clip_waveforms"]])
    assert (mels - t["out.clip_mels"]).abs().max() <= PREPROCESSED_ABS
    video = (t["in.clip_videos_u8"].float() / 255).permute(0, 2, 1, 3, 4)
    frames = preprocess_video(video).permute(0, 2, 1, 3, 4).flatten(0, 1)
    images = image_audio.encode_image(frames).reshape(2, 12, -1)
    assert _rel(images, t["out.clip_image_embeddings"]) <= FEATURES_REL
    assert _rel(image_audio.encode_audio(mels), t["out.clip_audio_embeddings"]) <= FEATURES_REL
    assert _rel(text.encode(texts), t["out.clip_text_embeddings"]) <= FEATURES_REL
    sims = frame_similarities(image_audio, video, mels, texts, text)
    assert (sims.ia - t["out.clip_ia_sim"]).abs().max() <= SIMS_ABS
    assert (sims.it - t["out.clip_it_sim"]).abs().max() <= SIMS_ABS
    ia, it = FrameSimilarities.per_clip(sims.ia), FrameSimilarities.per_clip(sims.it)
    assert (ia - t["out.clip_ia_per_clip"]).abs().max() <= SIMS_ABS
    assert (it - t["out.clip_it_per_clip"]).abs().max() <= SIMS_ABS
    table = {**mean_std("IA", ia.tolist()), **mean_std("IT", it.tolist())}
    for key, value in table.items():
        assert value == pytest.approx(meta["clip"][key], abs=SIMS_ABS), key
