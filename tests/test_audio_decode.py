"""Decoding: every container/codec users bring comes out as 16 kHz mono with its content where it belongs."""

from __future__ import annotations

import fractions
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from avsync_core.audio import (
    SAMPLE_RATE,
    Waveform,
    decode_audio,
    from_comfy_audio,
    probe_audio_duration,
    to_comfy_audio,
)
from avsync_core.audio import decode as decode_module
from avsync_core.errors import AudioError, InvalidInputError

RATES = (8000, 22050, 44100, 48000)
TONE_HZ = 437.0
TONE_END = 0.5
CLICKS = (0.62, 0.81, 1.03)  # burst centres, seconds
SECONDS = 1.2
HOP = 0.010  # one mel hop: the timing tolerance the model can see
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def _can_encode(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        return False
    return True


def _test_signal(rate: int, channels: int, seconds: float = SECONDS) -> np.ndarray:
    """Tone in [0, 0.5) s and 4 ms 1.5 kHz bursts at CLICKS; in stereo the tone is left and the clicks right,
    so a decoder that drops a channel loses one of them."""
    t = np.arange(int(round(seconds * rate))) / rate
    tone = np.where(t < TONE_END, 0.3 * np.sin(2 * np.pi * TONE_HZ * t), 0.0)
    clicks = np.zeros_like(t)
    for centre in CLICKS:
        near = np.abs(t - centre) < 0.002
        clicks[near] = 0.9 * np.hanning(near.sum() + 2)[1:-1] * np.cos(2 * np.pi * 1500 * (t[near] - centre))
    if channels == 1:
        return (tone + clicks)[None].astype(np.float32)
    return np.stack([tone, clicks]).astype(np.float32)


def _write(
    path: Path,
    container: str,
    acodec: str,
    data: np.ndarray,
    rate: int,
    vcodec: str | None = None,
    seconds: float = SECONDS,
) -> Path:
    """Mux ``data`` (channels, T) with ``acodec`` (PyAV converts the float frames to the codec's format)."""
    layout = "mono" if data.shape[0] == 1 else "stereo"
    out = av.open(str(path), "w", format=container)
    video = None
    if vcodec:
        video = out.add_stream(vcodec, rate=10)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
    options = {"strict": "experimental"} if acodec == "vorbis" else {}
    audio = out.add_stream(acodec, rate=rate, layout=layout, options=options)
    step = 1024
    for pos in range(0, data.shape[1], step):
        chunk = np.ascontiguousarray(data[:, pos : pos + step])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, pos, fractions.Fraction(1, rate)
        out.mux(audio.encode(frame))
    out.mux(audio.encode(None))
    if video is not None:
        for i in range(int(seconds * 10)):
            picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 20 * i % 255, np.uint8), format="rgb24")
            picture.pts = i
            out.mux(video.encode(picture))
        out.mux(video.encode(None))
    out.close()
    return path


def _video_codec(preferred: tuple[str, ...]) -> str | None:
    return next((c for c in preferred if _can_encode(c)), None)


def _vorbis_or_opus(rate: int, channels: int) -> str:
    """Ogg/WebM audio codec for this rate, or skip when this FFmpeg build cannot encode it at all."""
    if rate in OPUS_RATES and _can_encode("libopus"):
        return "libopus"
    if _can_encode("libvorbis"):
        return "libvorbis"
    if channels == 2 and _can_encode("vorbis"):
        return "vorbis"
    pytest.skip(
        f"this FFmpeg build cannot write {channels}-channel {rate} Hz Ogg/WebM audio: Opus only stores "
        f"{OPUS_RATES} Hz, there is no libvorbis, and FFmpeg's built-in Vorbis encoder writes stereo only"
    )


# name: (container, extension, audio codec or a chooser, video codecs to try)
FORMATS = {
    "wav": ("wav", ".wav", "pcm_s16le", None),
    "flac": ("flac", ".flac", "flac", None),
    "mp3": ("mp3", ".mp3", "libmp3lame", None),
    "ogg": ("ogg", ".ogg", _vorbis_or_opus, None),
    "m4a": ("ipod", ".m4a", "aac", None),
    "mp4": ("mp4", ".mp4", "aac", ("libx264", "h264", "mpeg4")),
    "mov": ("mov", ".mov", "pcm_s16le", ("libx264", "h264", "mpeg4")),
    "webm": ("webm", ".webm", _vorbis_or_opus, ("libvpx-vp9", "libvpx")),
    "mkv": ("matroska", ".mkv", "aac", ("libx264", "h264", "mpeg4")),
}


def _make(tmp_path: Path, name: str, rate: int, channels: int) -> Path:
    container, ext, acodec, vcodecs = FORMATS[name]
    if callable(acodec):
        acodec = acodec(rate, channels)
    if not _can_encode(acodec):
        pytest.skip(f"this PyAV build has no {acodec} encoder")
    vcodec = None
    if vcodecs:
        vcodec = _video_codec(vcodecs)
        if vcodec is None:
            pytest.skip(f"this PyAV build has none of the video encoders {vcodecs}")
    path = tmp_path / f"{name}_{rate}_{channels}{ext}"
    return _write(path, container, acodec, _test_signal(rate, channels), rate, vcodec)


def _envelope(x: np.ndarray, rate: int) -> np.ndarray:
    width = max(1, int(0.002 * rate))
    return np.convolve(np.abs(x), np.ones(width) / width, mode="same")


def _click_times(x: np.ndarray, rate: int, after: float) -> list[float]:
    """Peaks of the 2 ms envelope above 30 % of the loudest, at least 50 ms apart, later than ``after``."""
    env = _envelope(x, rate)
    env[: int(after * rate)] = 0
    threshold = 0.3 * env.max()
    found: list[float] = []
    order = np.argsort(env)[::-1]
    for i in order:
        if env[i] < threshold:
            break
        if all(abs(i / rate - t) > 0.05 for t in found):
            found.append(i / rate)
    return sorted(found)


def _dominant_frequency(x: np.ndarray, rate: int, begin: float, end: float) -> tuple[float, float]:
    seg = x[int(begin * rate) : int(end * rate)]
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    return float(np.argmax(spectrum) * rate / len(seg)), rate / len(seg)


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("name", list(FORMATS))
def test_formats_decode_to_16k_mono_with_content_in_place(tmp_path, name, rate, channels):
    path = _make(tmp_path, name, rate, channels)
    wave = decode_audio(path)
    assert wave.sample_rate == SAMPLE_RATE and wave.channels == 1 and wave.samples.dtype == torch.float32
    x = wave.samples[0].numpy()
    # Nothing lost at the start or end; at most one codec frame of encoder padding left at the end.
    assert SECONDS - HOP <= wave.duration <= SECONDS + 1024 / rate + HOP, wave.duration
    freq, bin_hz = _dominant_frequency(x, SAMPLE_RATE, 0.05, 0.45)
    assert abs(freq - TONE_HZ) <= 2 * bin_hz, f"tone at {freq:.1f} Hz, expected {TONE_HZ}"
    clicks = _click_times(x, SAMPLE_RATE, after=TONE_END + 0.05)
    assert len(clicks) == len(CLICKS), clicks
    assert np.max(np.abs(np.array(clicks) - CLICKS)) <= HOP, f"clicks at {clicks}, expected {CLICKS}"

    # A window after a seek: clicks move by exactly the start offset.
    start, duration = 0.55, 0.6
    window = decode_audio(path, start=start, duration=duration)
    assert window.num_samples == round(duration * SAMPLE_RATE)
    shifted = _click_times(window.samples[0].numpy(), SAMPLE_RATE, after=0.0)
    assert np.max(np.abs(np.array(shifted) + start - CLICKS)) <= HOP, shifted


def test_native_rate_and_channels_are_kept_on_request(tmp_path):
    path = _write(tmp_path / "s.wav", "wav", "pcm_s16le", _test_signal(44100, 2), 44100)
    wave = decode_audio(path, sample_rate=None, mono=False)
    assert wave.sample_rate == 44100 and wave.channels == 2
    reference = _test_signal(44100, 2)  # tone left, clicks right: channel order and content both checked
    assert wave.samples.shape == reference.shape
    assert np.abs(wave.samples.numpy() - reference).max() <= 1.0 / 32768  # 16-bit quantisation


@pytest.mark.parametrize(
    "container,ext,codec,rate",
    [
        ("wav", ".wav", "pcm_s16le", 44100),
        ("flac", ".flac", "flac", 22050),
        ("mp3", ".mp3", "libmp3lame", 48000),
        ("wav", ".wav", "pcm_u8", 8000),
    ],
)
def test_window_equals_the_same_slice_of_the_whole_file(tmp_path, container, ext, codec, rate):
    """Seeking + resampling a window gives the samples the whole-file decode has at those times."""
    seconds = 4.0
    rng = np.random.default_rng(3)
    data = (0.2 * rng.standard_normal((1, int(seconds * rate)))).clip(-1, 1).astype(np.float32)
    path = _write(tmp_path / f"n{ext}", container, codec, data, rate, seconds=seconds)
    whole = decode_audio(path).samples[0]
    scale = whole.abs().max()
    for start in (0.7, 1.2345, 2.5, 3.3):
        window = decode_audio(path, start=start, duration=0.5).samples[0]
        first = round(start * SAMPLE_RATE)
        assert window.shape[0] == round(0.5 * SAMPLE_RATE)
        assert (window - whole[first : first + window.shape[0]]).abs().max() <= 1e-5 * scale, start


def test_probe_duration_matches_decoded_length(tmp_path):
    for name in ("wav", "mp3", "m4a", "mkv"):
        path = _make(tmp_path, name, 44100, 2)
        decoded = decode_audio(path).duration
        assert abs(probe_audio_duration(path) - decoded) <= 1024 / 44100 + 1e-3, name


def test_comfy_audio_round_trip_and_mixdown():
    rate = 44100
    stereo = torch.from_numpy(_test_signal(rate, 2))
    batch = torch.stack([torch.zeros_like(stereo), stereo])  # item 1 is the one we want
    audio = {"waveform": batch.clone(), "sample_rate": rate}
    wave = from_comfy_audio(audio, index=1)
    assert torch.equal(audio["waveform"], batch), "the caller's AUDIO must not be modified"
    assert wave.sample_rate == SAMPLE_RATE and wave.channels == 1
    assert abs(wave.num_samples - round(SECONDS * SAMPLE_RATE)) <= 1
    x = wave.samples[0].numpy()
    assert abs(_dominant_frequency(x, SAMPLE_RATE, 0.05, 0.45)[0] - TONE_HZ) <= 5
    assert np.max(np.abs(np.array(_click_times(x, SAMPLE_RATE, 0.55)) - CLICKS)) <= HOP
    # Mono mix-down is the channel average.
    native = from_comfy_audio(audio, index=1, sample_rate=None)
    assert torch.allclose(native.samples[0], stereo.mean(0))
    back = to_comfy_audio(native)
    assert back["waveform"].shape == (1, 1, stereo.shape[1]) and back["sample_rate"] == rate
    assert back["waveform"].dtype == torch.float32
    again = from_comfy_audio(back, sample_rate=None)
    assert torch.equal(again.samples, native.samples)


# ------------------------------------------------------------------------------------------- long audio


def _repeated_mp3(path: Path, unit_seconds: float, repeats: int) -> tuple[Path, float]:
    """An mp3 made by muxing one encoded unit again and again: hours of audio written in well under a second.

    Each unit holds a click; returns (path, seconds per unit as decoded)."""
    rate = 8000
    out = av.open(str(path), "w", format="mp3")
    stream = out.add_stream("libmp3lame", rate=rate, layout="mono")
    stream.bit_rate = 8000
    n = int(unit_seconds * rate)
    x = (0.1 * np.sin(2 * np.pi * 300 * np.arange(n) / rate)).astype(np.float32)
    x[int(0.25 * rate) : int(0.25 * rate) + 8] = 0.9
    packets = []
    for pos in range(0, n, 1152):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(x[None, pos : pos + 1152]), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = rate, pos, fractions.Fraction(1, rate)
        packets += stream.encode(frame)
    packets += stream.encode(None)
    span = len(packets) * stream.codec_context.frame_size  # an mp3 stream's clock is its frame count
    for r in range(repeats):
        for p in packets:
            q = av.Packet(bytes(p))
            q.pts = q.dts = p.pts + r * span
            q.duration, q.time_base, q.stream = p.duration, p.time_base, stream
            out.mux(q)
    out.close()
    return path, span / rate


class _ContainerProxy:
    """A PyAV container stand-in that delegates everything it does not override to the real one."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)


class _CountingContainer(_ContainerProxy):
    """Wraps a PyAV container to count what decode_audio demuxes."""

    def __init__(self, inner, counts):
        super().__init__(inner)
        self._counts = counts

    def demux(self, *args, **kwargs):
        for packet in self._inner.demux(*args, **kwargs):
            self._counts["packets"] += 1
            yield packet

    def seek(self, *args, **kwargs):
        self._counts["seeks"] += 1
        return self._inner.seek(*args, **kwargs)


@pytest.fixture(scope="module")
def hour_mp3(tmp_path_factory):
    return _repeated_mp3(tmp_path_factory.mktemp("long") / "hour.mp3", 2.016, 1786)  # ~1 h


def test_hour_long_file_decodes_a_window_without_reading_the_rest(hour_mp3, monkeypatch):
    path, unit = hour_mp3
    total = probe_audio_duration(path)
    assert total > 3600
    first_click = _click_times(decode_audio(path, start=0.0, duration=unit).samples[0].numpy(), SAMPLE_RATE, 0.0)
    assert len(first_click) == 1
    counts = {"packets": 0, "seeks": 0}
    real_open = av.open
    monkeypatch.setattr(decode_module.av, "open", lambda *a, **k: _CountingContainer(real_open(*a, **k), counts))
    start = 3000.0
    wave = decode_audio(path, start=start, duration=2.0)
    assert wave.num_samples == 2 * SAMPLE_RATE
    assert counts["seeks"] >= 1
    packets_per_second = 8000 / 576
    assert 0 < counts["packets"] <= 4 * packets_per_second, counts  # 2 s window + 0.5 s pre-roll + slack
    # The window holds the right content: unit k's click sits at k * unit + the first unit's click time.
    k0 = int(start / unit)
    expected = [k * unit + first_click[0] - start for k in range(k0, k0 + 3)]
    expected = [t for t in expected if 0.02 < t < 1.98]
    assert expected
    found = [t for t in _click_times(wave.samples[0].numpy(), SAMPLE_RATE, after=0.0) if 0.02 < t < 1.98]
    assert len(found) == len(expected) and np.max(np.abs(np.array(found) - expected)) <= HOP, (found, expected)


def test_whole_decode_of_hours_is_refused_early(hour_mp3, monkeypatch):
    path, _ = hour_mp3
    counts = {"packets": 0, "seeks": 0}
    real_open = av.open
    monkeypatch.setattr(decode_module.av, "open", lambda *a, **k: _CountingContainer(real_open(*a, **k), counts))
    with pytest.raises(AudioError, match="start/duration"):
        decode_audio(path, max_seconds=60)
    assert counts["packets"] <= 62 * 8000 / 576 + 10, "it must stop as soon as the limit is passed"


# ------------------------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        decode_audio(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp3").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        decode_audio(tmp_path / "empty.mp3")


def test_corrupt_file(tmp_path):
    (tmp_path / "junk.mp3").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="FFmpeg|no audio"):
        decode_audio(tmp_path / "junk.mp3")


def test_folder_is_not_a_file(tmp_path):
    with pytest.raises(AudioError, match="folder"):
        decode_audio(tmp_path)


def test_video_without_audio(tmp_path):
    vcodec = _video_codec(("libx264", "h264", "mpeg4"))
    if vcodec is None:
        pytest.skip("no video encoder in this PyAV build")
    out = av.open(str(tmp_path / "silent.mp4"), "w", format="mp4")
    video = out.add_stream(vcodec, rate=10)
    video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
    for i in range(5):
        picture = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
        picture.pts = i
        out.mux(video.encode(picture))
    out.mux(video.encode(None))
    out.close()
    with pytest.raises(AudioError, match="no audio stream.*video"):
        decode_audio(tmp_path / "silent.mp4")
    with pytest.raises(AudioError, match="no audio stream"):
        probe_audio_duration(tmp_path / "silent.mp4")


def test_nan_samples_in_a_file(tmp_path):
    data = _test_signal(16000, 1)
    data[0, 5000] = np.nan
    path = _write(tmp_path / "nan.wav", "wav", "pcm_f32le", data, 16000)
    with pytest.raises(AudioError, match=r"1 NaN.*nan\.wav|nan\.wav.*1 NaN"):
        decode_audio(path)


@pytest.mark.parametrize("name", ["wav", "mkv"])  # declared length / found by decoding
def test_start_past_the_end(tmp_path, name):
    path = _make(tmp_path, name, 48000, 1)
    with pytest.raises(AudioError, match=r"past the end of the audio \(1\.2"):
        decode_audio(path, start=5.0)


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({"start": -1.0}, "start"),
        ({"start": float("nan")}, "start"),
        ({"duration": 0.0}, "duration"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"duration": 7200.0}, "max_seconds"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, word):
    path = _write(tmp_path / "s.wav", "wav", "pcm_s16le", _test_signal(16000, 1), 16000)
    with pytest.raises(InvalidInputError, match=word):
        decode_audio(path, **kwargs)


def test_silence_is_legal_audio(tmp_path):
    path = _write(tmp_path / "quiet.flac", "flac", "flac", np.zeros((2, 16000), np.float32), 16000)
    wave = decode_audio(path)
    assert wave.num_samples == 16000 and float(wave.samples.abs().max()) == 0.0


@pytest.mark.parametrize(
    "audio,word",
    [
        ("not a dict", "AUDIO"),
        ({"waveform": torch.zeros(1, 1, 100)}, "sample_rate"),
        ({"waveform": torch.zeros(2, 100), "sample_rate": 16000}, r"\[batch, channels, samples\]"),
        ({"waveform": torch.zeros(1, 1, 2, 100), "sample_rate": 16000}, r"\[batch, channels, samples\]"),
        ({"waveform": torch.zeros(1, 48000, 2), "sample_rate": 16000}, "looks like"),
        ({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}, "empty"),
        ({"waveform": torch.zeros(1, 1, 100, dtype=torch.int16), "sample_rate": 16000}, "floating point"),
        ({"waveform": torch.zeros(1, 1, 100), "sample_rate": -5}, "sample_rate"),
        ({"waveform": torch.zeros(1, 1, 100), "sample_rate": 44100.5}, "sample_rate"),
        ({"waveform": np.zeros((1, 1, 100)), "sample_rate": 16000}, "torch tensor"),
    ],
)
def test_bad_comfy_audio(audio, word):
    with pytest.raises(InvalidInputError, match=word):
        from_comfy_audio(audio)


def test_comfy_audio_index_out_of_range():
    with pytest.raises(InvalidInputError, match="holds 2"):
        from_comfy_audio({"waveform": torch.zeros(2, 1, 100), "sample_rate": 16000}, index=2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_comfy_audio(bad):
    wave = torch.zeros(1, 2, 16000)
    wave[0, 1, 8000] = bad
    with pytest.raises(AudioError, match=r"AUDIO item 0.*0\.500 s"):
        from_comfy_audio({"waveform": wave, "sample_rate": 16000})


def test_waveform_validates_its_fields():
    with pytest.raises(InvalidInputError, match="channels, samples"):
        Waveform(torch.zeros(10), 16000)
    with pytest.raises(InvalidInputError, match="sample_rate"):
        Waveform(torch.zeros(1, 10), 0)
    assert math.isclose(Waveform(torch.zeros(2, 8000), 16000).duration, 0.5)


def test_a_truncated_file_gives_the_audio_it_holds(tmp_path):
    path = _write(tmp_path / "cut.wav", "wav", "pcm_s16le", _test_signal(16000, 1), 16000)
    data = path.read_bytes()
    path.write_bytes(data[: 44 + 2 * 12000])  # header + 0.75 s of 16-bit mono
    wave = decode_audio(path)
    assert abs(wave.duration - 0.75) <= HOP  # less the header bytes
    assert _click_times(wave.samples[0].numpy(), SAMPLE_RATE, after=0.55) == [pytest.approx(CLICKS[0], abs=HOP)]


def test_damaged_bytes_in_the_middle_keep_the_timeline(tmp_path):
    """Damage inside an MP4's audio data: the file still decodes and later content stays where it was."""
    path = _make(tmp_path, "m4a", 48000, 2)
    data = bytearray(path.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 200] = bytes(200)
    path.write_bytes(bytes(data))
    wave = decode_audio(path)
    assert abs(wave.duration - SECONDS) <= HOP
    clicks = _click_times(wave.samples[0].numpy(), SAMPLE_RATE, after=0.55)
    assert len(clicks) == len(CLICKS) and np.max(np.abs(np.array(clicks) - CLICKS)) <= HOP


class _WithoutDurations(_ContainerProxy):
    """A container as FFmpeg reports a stream it cannot estimate the length of (no durations at all)."""

    class _Stream:
        duration = None

        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            return getattr(self._inner, name)

    def __init__(self, inner):
        super().__init__(inner)
        self.duration = None
        self.streams = type("Streams", (), {"audio": [self._Stream(s) for s in inner.streams.audio]})()

    def demux(self, stream):
        return self._inner.demux(stream._inner)


def test_probe_without_metadata_reads_the_packet_timestamps(tmp_path, monkeypatch):
    path = _make(tmp_path, "mkv", 48000, 2)
    declared = probe_audio_duration(path)
    real_open = av.open
    monkeypatch.setattr(decode_module.av, "open", lambda *a, **k: _WithoutDurations(real_open(*a, **k)))
    assert abs(probe_audio_duration(path) - declared) <= HOP
    assert abs(probe_audio_duration(path) - decode_audio(path).duration) <= 1024 / 48000 + HOP
