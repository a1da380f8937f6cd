"""descore.video_io: the index rule, exact-frame reads (seeking and not), round trips, in-memory layouts, bad input."""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from descore.errors import ConfigError, VideoError
from descore.video_io import (
    QWEN3_VL_FPS,
    QWEN3_VL_MAX_FRAMES,
    QWEN3_VL_MIN_FRAMES,
    Video,
    load_video,
    read_video,
    sample_frame_indices,
    to_video,
    write_video,
)

# ---------------------------------------------------------------------------------------------------------------
# Helpers: frames whose index can be read back from the pixels


def coded_frames(count: int, height: int = 16, width: int = 64) -> np.ndarray:
    """Frame k shows k in binary as 8 black/white stripes (bit b in stripe b): survives lossy codecs exactly."""
    frames = np.zeros((count, height, width, 3), np.uint8)
    stripe = width // 8
    for k in range(count):
        for bit in range(8):
            if (k >> bit) & 1:
                frames[k, :, bit * stripe : (bit + 1) * stripe] = 255
    return frames


def decode_indices(video: Video) -> list[int]:
    """The k each frame of a coded video shows."""
    columns = video.frames.mean(dim=(1, 2))  # (T, W)
    stripe = columns.shape[1] // 8
    bits = torch.stack([columns[:, b * stripe : (b + 1) * stripe].mean(dim=1) > 0.5 for b in range(8)], dim=1)
    return (bits.long() * (2 ** torch.arange(8))).sum(dim=1).tolist()


def smooth_frames(count: int, height: int, width: int) -> np.ndarray:
    """A drifting gradient with a moving square: ordinary video content for pixel-error bounds."""
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((count, height, width, 3), np.uint8)
    for k in range(count):
        frames[k, ..., 0] = (xx * 255 // max(width - 1, 1) + 3 * k) % 256
        frames[k, ..., 1] = yy * 255 // max(height - 1, 1)
        frames[k, ..., 2] = 128
        x0 = (2 * k) % max(width - 8, 1)
        frames[k, 4:12, x0 : x0 + 8] = (250, 250, 40)
    return frames


@pytest.fixture(scope="module")
def coded_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 100-frame coded clip at 24 fps in each written format."""
    folder = tmp_path_factory.mktemp("coded")
    frames = coded_frames(100)
    return {ext: write_video(frames, folder / f"coded.{ext}", fps=24) for ext in ("mp4", "webm", "gif")}


# ---------------------------------------------------------------------------------------------------------------
# The index rule


def test_index_rule_matches_qwen3_vl_processor() -> None:
    from types import SimpleNamespace

    qwen3 = pytest.importorskip("transformers.models.qwen3_vl.video_processing_qwen3_vl")
    from transformers.video_utils import VideoMetadata

    processor = SimpleNamespace(
        fps=QWEN3_VL_FPS, min_frames=QWEN3_VL_MIN_FRAMES, max_frames=QWEN3_VL_MAX_FRAMES, num_frames=None
    )
    for total in (1, 2, 3, 4, 5, 9, 24, 49, 81, 100, 121, 480, 2000):
        for source_fps in (8.0, 16.0, 24.0, 30000 / 1001, 60.0):
            for fps in (0.5, 1.0, 2.0, 3.0):
                metadata = VideoMetadata(total_num_frames=total, fps=source_fps)
                expected = qwen3.Qwen3VLVideoProcessor.sample_frames(processor, metadata, fps=fps).tolist()
                ours = sample_frame_indices(
                    total, source_fps, fps=fps, min_frames=QWEN3_VL_MIN_FRAMES, max_frames=QWEN3_VL_MAX_FRAMES
                )
                assert ours == expected, (total, source_fps, fps)
        for count in (1, 2, 7, 8, 16, 33):
            metadata = VideoMetadata(total_num_frames=total, fps=24.0)
            expected = qwen3.Qwen3VLVideoProcessor.sample_frames(
                processor, metadata, num_frames=count
            ).tolist()
            assert sample_frame_indices(total, 24.0, num_frames=count) == expected, (total, count)


def test_index_rule_shape_and_arguments() -> None:
    assert sample_frame_indices(100, 24.0, fps=2) == [0, 14, 28, 42, 57, 71, 85, 99]
    assert sample_frame_indices(10, None) == list(range(10))  # neither: every frame
    assert sample_frame_indices(10, None, max_frames=4) == [0, 3, 6, 9]
    assert sample_frame_indices(3, None, num_frames=5) == [0, 0, 1, 2, 2]  # repeats, as Qwen3-VL does
    assert sample_frame_indices(100, 24.0, fps=0.01) == [0]  # at least one frame
    assert sample_frame_indices(100, 24.0, fps=0.01, min_frames=4) == [0, 33, 66, 99]
    assert sample_frame_indices(5, 24.0, fps=100) == [0, 1, 2, 3, 4]  # never more than the clip has
    with pytest.raises(ConfigError, match="not both"):
        sample_frame_indices(10, 24.0, fps=2, num_frames=3)
    with pytest.raises(VideoError, match="source frame rate"):
        sample_frame_indices(10, None, fps=2)
    with pytest.raises(ConfigError, match="min_frames"):
        sample_frame_indices(10, 24.0, min_frames=5, max_frames=2)
    with pytest.raises(ConfigError, match="fps"):
        sample_frame_indices(10, 24.0, fps=-1)
    with pytest.raises(VideoError, match="0 frames"):
        sample_frame_indices(0, 24.0)


# ---------------------------------------------------------------------------------------------------------------
# Exact frames and timestamps from files


@pytest.mark.parametrize("strategy", ["seek", "sequential", "auto"])
@pytest.mark.parametrize("ext", ["mp4", "webm"])
def test_sampled_frames_are_exactly_the_chosen_ones(
    coded_videos: dict[str, Path], ext: str, strategy: str
) -> None:
    path = coded_videos[ext]
    for sampling in ({"fps": 2}, {"fps": 5.5}, {"num_frames": 7}, {"num_frames": 100}, {}):
        video = read_video(path, strategy=strategy, **sampling)
        expected = sample_frame_indices(100, 24.0, **sampling)
        assert video.frame_indices.tolist() == expected, sampling
        assert decode_indices(video) == expected, sampling
        assert video.source_fps == 24.0
        torch.testing.assert_close(
            video.timestamps, torch.tensor(expected, dtype=torch.float64) / 24, atol=1e-3, rtol=0
        )


def test_gif_frames_and_centisecond_timestamps(coded_videos: dict[str, Path]) -> None:
    video = read_video(coded_videos["gif"], fps=2)
    assert decode_indices(video) == video.frame_indices.tolist() == sample_frame_indices(100, 24.0, fps=2)
    # GIF delays are whole centiseconds: frame k starts at round(100 k / 24) / 100 s.
    expected = torch.tensor(
        [round(100 * k / 24) / 100 for k in video.frame_indices.tolist()], dtype=torch.float64
    )
    torch.testing.assert_close(video.timestamps, expected)
    assert video.source_fps == pytest.approx(24.0, rel=0.01)
    assert video.sampled_fps == pytest.approx(7 / float(video.timestamps[-1]))


def test_variable_frame_rate_timestamps_come_from_pts(tmp_path: Path) -> None:
    times_ms = [0, 40, 80, 200, 240, 500, 540, 580, 1000, 1040]
    path = tmp_path / "vfr.mp4"
    frames = coded_frames(len(times_ms))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 16, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.codec_context.gop_size = 3
        stream.codec_context.max_b_frames = 0
        for k, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(frames[k], format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    for strategy in ("seek", "sequential"):
        video = read_video(path, num_frames=4, strategy=strategy)
        assert video.frame_indices.tolist() == [0, 3, 6, 9] == decode_indices(video)
        torch.testing.assert_close(
            video.timestamps, torch.tensor([0.0, 0.2, 0.54, 1.04], dtype=torch.float64)
        )


def test_foreign_mp4_with_b_frames_reads_exactly(tmp_path: Path) -> None:
    """Frames reordered by B-frames (decode order != display order) still come back exactly, seeking or not."""
    count = 72
    frames = np.concatenate([coded_frames(count, 8, 64), smooth_frames(count, 24, 64)], axis=1)
    path = tmp_path / "bframes.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.codec_context.gop_size = 12
        stream.codec_context.max_b_frames = 3
        stream.options = {"crf": "10", "x264-params": "open-gop=1"}
        for k, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = k
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        decode_order = [p.pts for p in container.demux(video=0) if p.size]
    assert decode_order != sorted(decode_order), "the premise: B-frames reorder the packets"
    for strategy in ("seek", "sequential"):
        for sampling in ({"fps": 2}, {"fps": 7}, {"num_frames": 13}):
            video = read_video(path, strategy=strategy, **sampling)
            top = Video(frames=video.frames[:, :, :8], timestamps=video.timestamps)
            assert (
                decode_indices(top)
                == video.frame_indices.tolist()
                == sample_frame_indices(count, 24, **sampling)
            )


def test_auto_strategy_seeks_only_when_it_saves_decoding() -> None:
    from descore.video_io import _StreamIndex, _uses_seek

    def index(keyframe_every: int) -> _StreamIndex:
        pts = list(range(0, 480 * 512, 512))
        return _StreamIndex(pts, pts[::keyframe_every], Fraction(1, 12288), 512, "h264")

    sparse = sample_frame_indices(480, 24.0, fps=2)
    assert _uses_seek(index(4), sparse)
    assert not _uses_seek(index(4), list(range(480)))  # every frame: decode straight through
    assert not _uses_seek(index(480), sparse)  # one keyframe: seeking cannot skip anything
    assert _uses_seek(index(480), [470, 479]) is False and _uses_seek(index(24), [470, 479])


# ---------------------------------------------------------------------------------------------------------------
# Write -> read round trips


def _chroma_subsampling_error(frames: np.ndarray) -> float:
    """Mean error of RGB -> yuv420p -> RGB alone: the floor any 4:2:0 codec starts from (large on tiny frames)."""
    back = [
        av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray(format="rgb24")
        for f in frames
    ]
    return float(np.abs(np.stack(back).astype(np.float64) - frames).mean() / 255)


@pytest.mark.parametrize(
    ("ext", "height", "width", "fps"),
    [
        ("mp4", 48, 64, 24.0),
        ("mp4", 31, 45, 30000 / 1001),  # odd sides, NTSC rate
        ("mov", 32, 32, 8.0),
        ("mkv", 17, 32, 24.0),
        ("webm", 33, 48, 12.0),
        ("gif", 31, 40, 20.0),
    ],
)
def test_round_trip(tmp_path: Path, ext: str, height: int, width: int, fps: float) -> None:
    frames = smooth_frames(18, height, width)
    path = write_video(frames, tmp_path / f"clip.{ext}", fps=fps)
    video = read_video(path)
    assert (video.num_frames, video.height, video.width) == (18, height, width)
    assert video.source_fps == pytest.approx(fps, rel=0.01)
    assert video.duration == pytest.approx(18 / fps, rel=0.01)
    assert video.frames.dtype == torch.float32 and video.frames.shape[1] == 3
    assert float(video.frames.min()) >= 0 and float(video.frames.max()) <= 1
    original = torch.from_numpy(frames).permute(0, 3, 1, 2).double() / 255
    error = float((video.frames.double() - original).abs().mean())
    # The codec may add at most 2 grey levels on average to what 4:2:0 sampling (or a 256-colour palette) costs.
    floor = 1 / 255 if ext == "gif" else _chroma_subsampling_error(frames)
    assert error < floor + 2 / 255
    assert not list(tmp_path.glob(".*partial*")), "the temporary file must be gone"


@pytest.mark.parametrize(("ext", "height", "width"), [("mp4", 31, 45), ("mkv", 48, 48), ("mov", 16, 24)])
def test_lossless_round_trip_is_exact(tmp_path: Path, ext: str, height: int, width: int) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (9, height, width, 3), dtype=np.uint8)  # worst case
    path = write_video(frames, tmp_path / f"clip.{ext}", fps=8.0, lossless=True)
    video = read_video(path)
    assert video.source_fps == pytest.approx(8.0)
    assert np.array_equal((video.frames * 255).round().byte().permute(0, 2, 3, 1).numpy(), frames)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "gbrp"  # RGB planes, no chroma subsampling


def test_write_accepts_every_in_memory_format(tmp_path: Path) -> None:
    frames = smooth_frames(6, 16, 24)
    float_tchw = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    inputs = {
        "uint8_thwc": frames,
        "float_tchw": float_tchw.requires_grad_(),
        "pil": [Image.fromarray(f) for f in frames],
        "video": to_video(frames, fps=12),
    }
    written = [
        read_video(write_video(obj, tmp_path / f"{key}.mp4", fps=12)).frames for key, obj in inputs.items()
    ]
    for frames_back in written[1:]:
        assert torch.equal(frames_back, written[0])


def test_write_errors(tmp_path: Path) -> None:
    frames = smooth_frames(3, 16, 16)
    with pytest.raises(ConfigError, match="avi"):
        write_video(frames, tmp_path / "clip.avi", fps=8)
    with pytest.raises(ConfigError, match="fps"):
        write_video(frames, tmp_path / "clip.mp4", fps=0)
    with pytest.raises(ConfigError, match="100 frames per second"):
        write_video(frames, tmp_path / "clip.gif", fps=120)
    with pytest.raises(
        ConfigError, match=r"lossless writing is available for \['.mkv', '.mov', '.mp4'\], not '.webm'"
    ):
        write_video(frames, tmp_path / "clip.webm", fps=8, lossless=True)
    with pytest.raises(ConfigError, match="lossless writing uses crf 0; got crf=18"):
        write_video(frames, tmp_path / "clip.mp4", fps=8, lossless=True, crf=18)
    with pytest.raises(VideoError, match=r"frames for .*clip\.mp4.*\[-1, 1\]"):
        write_video(torch.full((3, 3, 16, 16), -0.5), tmp_path / "clip.mp4", fps=8)
    assert not list(tmp_path.iterdir())


def test_keyframe_interval_is_written(tmp_path: Path) -> None:
    path = write_video(smooth_frames(24, 16, 16), tmp_path / "clip.mp4", fps=24, keyframe_interval=6)
    with av.open(str(path)) as container:
        keyframes = [p.pts for p in container.demux(video=0) if p.size and p.is_keyframe]
    assert len(keyframes) >= 4  # every 6 frames (the encoder may add scene-cut keyframes)


# ---------------------------------------------------------------------------------------------------------------
# Folders of frames and the imageio fallback


def test_folder_of_frames(tmp_path: Path) -> None:
    frames = coded_frames(12)
    for k, frame in enumerate(frames):  # names that sort wrongly as text: frame_10 < frame_2
        Image.fromarray(frame).save(tmp_path / f"frame_{k}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    video = read_video(tmp_path)
    assert decode_indices(video) == list(range(12))
    assert video.source_fps is None and video.sampled_fps is None
    assert bool(torch.isnan(video.timestamps).all())
    with pytest.raises(VideoError, match="source frame rate"):
        read_video(tmp_path, fps=2)
    sampled = read_video(tmp_path, fps=2, source_fps=6)
    assert decode_indices(sampled) == sampled.frame_indices.tolist() == [0, 4, 7, 11]
    torch.testing.assert_close(sampled.timestamps, torch.tensor([0, 4, 7, 11], dtype=torch.float64) / 6)
    assert sampled.duration == 2.0


def test_folder_problems_name_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match=r"empty.*no image files"):
        read_video(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(mixed / "b.png")
    with pytest.raises(VideoError, match=r"b\.png.*9x8.*share one size"):
        read_video(mixed)
    broken = tmp_path / "broken"
    broken.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(broken / "a.png")
    (broken / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(VideoError, match=r"b\.png: cannot read frame 1") as info:
        read_video(broken)
    assert info.value.__cause__ is not None


def test_animated_webp_reads_through_imageio(tmp_path: Path) -> None:
    frames = coded_frames(6)
    path = tmp_path / "anim.webp"
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0, lossless=True)
    with pytest.raises(av.FFmpegError), av.open(str(path)) as container:  # premise: PyAV cannot decode it
        list(container.decode(video=0))
    video = read_video(path)
    assert decode_indices(video) == list(range(6))
    assert read_video(path, num_frames=3).frame_indices.tolist() == [0, 2, 5]


# ---------------------------------------------------------------------------------------------------------------
# In-memory frames


def test_in_memory_layouts_normalise_to_one() -> None:
    frames = smooth_frames(5, 12, 20)  # (T, H, W, C) uint8
    reference = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    variants = {
        "uint8 THWC array": frames,
        "uint8 TCHW tensor": torch.from_numpy(frames).permute(0, 3, 1, 2),
        "float TCHW tensor": reference.clone(),
        "float64 THWC array": frames.astype(np.float64) / 255,
        "float16 TCHW tensor": reference.half(),
        "PIL list": [Image.fromarray(f) for f in frames],
        "array list HWC": list(frames),
        "tensor list CHW": list(torch.from_numpy(frames).permute(0, 3, 1, 2)),
    }
    for label, obj in variants.items():
        video = to_video(obj, fps=10, name=label)
        assert video.frames.shape == (5, 3, 12, 20) and video.frames.dtype == torch.float32, label
        torch.testing.assert_close(video.frames, reference, atol=2e-3, rtol=0, msg=label)
        torch.testing.assert_close(video.timestamps, torch.arange(5, dtype=torch.float64) / 10)
    assert to_video(frames).source_fps is None


def test_gray_and_alpha_channels() -> None:
    gray = np.linspace(0, 1, 2 * 6 * 8, dtype=np.float32).reshape(2, 1, 6, 8)
    video = to_video(gray)
    assert video.frames.shape == (2, 3, 6, 8)
    assert torch.equal(video.frames[:, 0], video.frames[:, 2])
    rgba = np.zeros((2, 6, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red, half of it transparent
    rgba[:, :3, :, 3] = 255
    video = to_video(rgba)
    torch.testing.assert_close(video.frames[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(video.frames[0, :, 5, 0], torch.tensor([1.0, 1.0, 1.0]))  # over white
    pil_gray = [Image.fromarray(np.full((6, 8), 128, np.uint8), mode="L")] * 3
    assert to_video(pil_gray).frames.shape == (3, 3, 6, 8)


def test_float_input_keeps_autograd() -> None:
    frames = torch.rand(4, 3, 8, 8, requires_grad=True)
    video = load_video(frames, num_frames=2, source_fps=8)
    assert video.frames.requires_grad
    video.frames.sum().backward()
    assert frames.grad is not None
    assert frames.grad[0].eq(1).all() and frames.grad[1].eq(0).all() and frames.grad[3].eq(1).all()


def test_load_video_dispatch_and_sampling(coded_videos: dict[str, Path], tmp_path: Path) -> None:
    from_path = load_video(str(coded_videos["mp4"]), fps=2)
    assert decode_indices(from_path) == sample_frame_indices(100, 24.0, fps=2)
    in_memory = load_video(coded_frames(48), fps=2, source_fps=12, name="clip A")
    expected = sample_frame_indices(48, 12.0, fps=2)
    assert decode_indices(in_memory) == in_memory.frame_indices.tolist() == expected
    torch.testing.assert_close(in_memory.timestamps, torch.tensor(expected, dtype=torch.float64) / 12)
    assert in_memory.source == "clip A" and in_memory.duration == 4.0
    assert in_memory.sampled_fps == pytest.approx((len(expected) - 1) / (expected[-1] / 12))
    again = load_video(in_memory, num_frames=2)  # indices stay relative to the original source
    assert again.frame_indices.tolist() == [expected[0], expected[-1]]
    unknown_rate = to_video(coded_frames(48), name="clip D")
    with_rate = load_video(unknown_rate, fps=2, source_fps=12)
    assert with_rate.frame_indices.tolist() == expected and with_rate.duration == 4.0
    torch.testing.assert_close(with_rate.timestamps, in_memory.timestamps)
    with pytest.raises(ConfigError, match="clip A: the video is 12 fps; source_fps=24"):
        load_video(in_memory, source_fps=24)
    with pytest.raises(VideoError, match="clip B.*source frame rate"):
        load_video(coded_frames(10), fps=2, name="clip B")
    with pytest.raises(VideoError, match="clip C: has 1 frame, at least 2 needed"):
        load_video(coded_frames(1), min_frames=2, name="clip C")


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        (torch.full((2, 3, 4, 4), float("nan")), "NaN"),
        (torch.rand(2, 3, 4, 4) * 2 - 1, r"\[-1, 1\]"),
        (torch.rand(2, 3, 4, 4) * 255, r"\[0, 255\]"),
        (torch.randint(0, 255, (2, 3, 4, 4)), "dtype torch.int64"),
        (np.zeros((2, 4, 4, 3), bool), "dtype torch.bool"),
        (torch.rand(3, 4, 4), "4 dims"),
        (torch.rand(1, 2, 3, 4, 4), "4 dims"),
        (torch.rand(0, 3, 4, 4), "no video frames"),
        ([], "no video frames"),
        (torch.rand(2, 5, 4, 7), "channel axis"),
        ([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)], "frame 1 is"),
        ([Image.new("RGB", (4, 4)), np.zeros((4, 4, 3), np.uint8)], "only PIL images or only arrays"),
        (b"not frames", "cannot read frames from a bytes"),
    ],
)
def test_bad_in_memory_frames(obj: object, problem: str) -> None:
    with pytest.raises(VideoError, match=rf"^video 7: .*{problem}"):
        to_video(obj, name="video 7")


# ---------------------------------------------------------------------------------------------------------------
# Bad files


def _write_mkv_without_frames(path: Path) -> None:
    """A Matroska file whose video track holds no frame (its audio track keeps the file valid)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=24)
        video.width = video.height = 16
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=8000)
        audio.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in [*audio.encode(frame), *audio.encode(), *video.encode()]:
            container.mux(packet)


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        audio = container.add_stream("aac", rate=8000)
        audio.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in [*audio.encode(frame), *audio.encode()]:
            container.mux(packet)


def _write_without_faststart(path: Path) -> Path:
    """An mp4 as many tools write it: the index (moov) after the frame data."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for k, array in enumerate(smooth_frames(24, 32, 32)):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = k
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_bad_files(tmp_path: Path) -> None:
    good = write_video(smooth_frames(48, 32, 32), tmp_path / "good.mp4", fps=24)
    data = good.read_bytes()

    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (tmp_path / "missing.mp4", "no such file")
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.mp4", r"empty \(0 bytes\)")
    (tmp_path / "text.mp4").write_text("this is a text file, not a video\n")
    cases["text"] = (tmp_path / "text.mp4", "looks like a text file")
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])  # header first (+faststart), frames cut off
    cases["truncated"] = (tmp_path / "half.mp4", "truncated or corrupt")
    (tmp_path / "tail.mp4").write_bytes(data[len(data) // 2 :])  # no header at all
    cases["headless"] = (tmp_path / "tail.mp4", "not a readable video")
    late_index = _write_without_faststart(tmp_path / "late_index.mp4").read_bytes()
    (tmp_path / "late_half.mp4").write_bytes(late_index[: len(late_index) // 2])  # index (at the end) cut off
    cases["truncated, index last"] = (tmp_path / "late_half.mp4", "truncated")
    damaged = bytearray(data)
    damaged[len(data) // 2 : len(data) // 2 + 2000] = bytes(2000)  # frame data zeroed, header intact
    (tmp_path / "damaged.mp4").write_bytes(bytes(damaged))
    cases["damaged frames"] = (tmp_path / "damaged.mp4", "decoding failed after .* frames")
    rng = np.random.default_rng(0)
    corrupt = bytearray(data)
    corrupt[: len(data) // 3] = rng.integers(0, 256, len(data) // 3, dtype=np.uint8).tobytes()
    (tmp_path / "corrupt.mp4").write_bytes(bytes(corrupt))
    cases["corrupt"] = (tmp_path / "corrupt.mp4", "not a readable video")
    _write_mkv_without_frames(tmp_path / "zero.mkv")
    cases["zero frames"] = (tmp_path / "zero.mkv", "contains no video frames")
    _write_audio_only(tmp_path / "audio.mp4")
    cases["audio only"] = (tmp_path / "audio.mp4", r"no video stream \(streams: audio\)")

    for label, (path, problem) in cases.items():
        with pytest.raises(VideoError, match=problem) as info:
            read_video(path, fps=2)
        assert str(path) in str(info.value), label
        if label in ("text", "headless", "corrupt", "truncated, index last", "damaged frames"):
            assert isinstance(info.value.__cause__, av.FFmpegError), label


def test_one_frame_video(tmp_path: Path) -> None:
    path = write_video(coded_frames(1), tmp_path / "one.mp4", fps=24)
    video = read_video(path, fps=2)
    assert video.num_frames == 1 and decode_indices(video) == [0]
    assert video.sampled_fps is None and video.duration == pytest.approx(1 / 24)
    with pytest.raises(VideoError, match=r"one\.mp4: has 1 frame, at least 2 needed"):
        read_video(path, min_frames=2)


def test_bad_arguments(coded_videos: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="not both"):
        read_video(coded_videos["mp4"], fps=2, num_frames=4)
    with pytest.raises(ConfigError, match="strategy"):
        read_video(coded_videos["mp4"], strategy="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_frames"):
        load_video(coded_frames(4), num_frames=0)
    with pytest.raises(VideoError, match=r"Video\.frames"):
        Video(frames=torch.zeros(2, 4, 8, 8), timestamps=torch.zeros(2))
    assert math.isnan(float(to_video(coded_frames(2)).timestamps[0]))


def test_scoring_in_memory_frames_does_not_import_pyav():
    code = (
        "import sys\n"
        "import descore.scoring, reward_guidance.protocol, pipelines\n"
        "assert 'av' not in sys.modules, 'PyAV was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
