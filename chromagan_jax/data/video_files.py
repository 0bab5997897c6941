"""Video files: the container and codec vocabulary, and reading (PyAV, which bundles FFmpeg).

The one video reader: :func:`iter_frames` decodes uint8 RGB frames one at a time,
:func:`probe` reads the headers; both raise VideoError (one line naming the file) for anything
unusable. Colorizing (``inference/video.py``) and the synthetic clips (``data/synthetic.py``)
share the constants below.
"""

import dataclasses
import fractions
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image

from chromagan_jax import extras
from chromagan_jax.errors import VideoError


def require_av():
  """PyAV (the 'video' extra), imported on first use so that photos colorize without it;
  MissingExtraError when it is not installed."""
  return extras.require("av", "video", "video")


# Extensions taken as videos when a folder is walked. ".gif" is a video only when animated
# (see is_video); a still GIF stays a photo.
VIDEO_EXTENSIONS = frozenset(
  (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mpg", ".mpeg", ".ts", ".wmv")
  + (".flv", ".ogv", ".3gp", ".mts", ".m2ts", ".vob", ".mxf")
)
# Output container per input extension; others become mp4 (H.264 in AVI/MPEG-PS/TS/WMV
# works badly or not at all, and mp4 plays everywhere).
OUTPUT_EXTENSIONS = {".mp4": ".mp4", ".m4v": ".m4v", ".mov": ".mov", ".mkv": ".mkv"}
OUTPUT_EXTENSIONS |= {".webm": ".webm", ".gif": ".gif"}
DEFAULT_OUTPUT_EXTENSION = ".mp4"
# FFmpeg muxer for each output extension.
MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
MUXERS |= {".gif": "gif"}
# Default video encoder per output extension, and the encoders' default quality.
DEFAULT_CODECS = {".webm": "libvpx-vp9", ".gif": "gif"}
DEFAULT_CODEC = "libx264"
# x264's CRF 18 is "visually lossless or nearly so"; VP9's CRF scale differs (0-63, 31-33 is
# its documented sweet spot for 1080p). Both used in constant-quality mode.
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 32, "libsvtav1": 30}
DEFAULT_PRESET = "medium"
# libvpx-vp9 "good" deadline at cpu-used 4 with row multithreading: ~5-10x faster than its
# default (cpu-used 1) at a small size cost.
VP9_OPTIONS = {"deadline": "good", "cpu-used": "4", "row-mt": "1"}
PIX_FMT = "yuv420p"
ODD_SIZE_PIX_FMT = "yuv444p"
# Audio encoders when packets cannot be copied into the output container.
AUDIO_CODECS = {".webm": "libopus"}
DEFAULT_AUDIO_CODEC = "aac"
AUDIO_BIT_RATE = 192_000
GIF_COLOURS = 256


def is_video(path: str) -> bool:
  """True for video extensions; a GIF only when it has more than one frame."""
  ext = os.path.splitext(path)[1].lower()
  if ext != ".gif":
    return ext in VIDEO_EXTENSIONS
  try:
    with Image.open(path) as im:
      return getattr(im, "n_frames", 1) > 1
  except Exception:  # noqa: BLE001 - unreadable: let the photo reader report it.
    return False


def _open_input(path: str):
  """Opens ``path`` and returns (container, video stream); VideoError for anything unusable."""
  av = require_av()
  try:
    size = os.path.getsize(path)
  except OSError as e:
    raise VideoError(f"{path}: cannot read ({e.strerror or e})") from None
  if size == 0:
    raise VideoError(f"{path}: empty file (0 bytes)")
  try:
    container = av.open(path, "r")
  except av.FFmpegError as e:
    raise VideoError(f"{path}: not a video file FFmpeg can read ({_reason(e)})") from None
  try:
    if not container.streams.video:
      kinds = sorted({s.type for s in container.streams}) or ["no streams"]
      raise VideoError(f"{path}: no video stream (has: {', '.join(kinds)})")
    stream = container.streams.video[0]
    cc = stream.codec_context
    if cc is None or cc.codec is None or not cc.codec.name:
      raise VideoError(f"{path}: unsupported video codec (FFmpeg has no decoder for it)")
    if not stream.width or not stream.height:
      raise VideoError(f"{path}: video stream has no frame size (unsupported codec or corrupt)")
  except VideoError:
    container.close()
    raise
  except Exception as e:  # noqa: BLE001 - PyAV raises various errors for odd streams.
    container.close()
    raise VideoError(f"{path}: unsupported video stream ({_reason(e)})") from None
  stream.thread_type = "AUTO"
  return container, stream


def _reason(e: BaseException) -> str:
  text = getattr(e, "strerror", None) or str(e) or type(e).__name__
  return text.splitlines()[0] if text else type(e).__name__


def _expected_duration(container, stream) -> float | None:
  """The video's declared duration in seconds, if the container says (None otherwise)."""
  av = require_av()
  if stream.duration is not None and stream.time_base:
    return float(stream.duration * stream.time_base)
  # Matroska writes per-stream durations as a DURATION tag (HH:MM:SS.nnnnnnnnn).
  tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
  if tag and tag.count(":") == 2:
    h, m, s = tag.split(":")
    try:
      return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
      pass
  if container.duration is not None and not container.streams.audio:
    return container.duration / av.time_base
  return None


def frame_count_estimate(container, stream) -> int | None:
  """Frames declared by the container, or duration x rate; None when unknown."""
  if stream.frames:
    return int(stream.frames)
  duration = _expected_duration(container, stream)
  rate = stream.average_rate or stream.guessed_rate
  if duration and rate:
    return max(1, round(duration * float(rate)))
  return None


def iter_frames(path: str) -> Iterator[np.ndarray]:
  """Decodes ``path`` frame by frame: uint8 RGB (H, W, 3). VideoError if unusable."""
  av = require_av()
  container, stream = _open_input(path)
  try:
    for frame in container.decode(stream):
      yield frame.to_ndarray(format="rgb24")
  except av.FFmpegError as e:
    raise VideoError(f"{path}: corrupt or unsupported video data ({_reason(e)})") from None
  finally:
    container.close()


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What a video file declares: size, rate, time base, frame count estimate, codecs."""

  width: int
  height: int
  frame_rate: fractions.Fraction | None
  time_base: fractions.Fraction | None
  frames: int | None
  duration: float | None
  codec: str
  audio: tuple[str, ...]


def probe(path: str) -> VideoInfo:
  """Reads the headers of ``path`` (no decoding). VideoError if unusable."""
  container, stream = _open_input(path)
  try:
    return VideoInfo(
      width=stream.width,
      height=stream.height,
      frame_rate=stream.average_rate or stream.guessed_rate,
      time_base=stream.time_base,
      frames=frame_count_estimate(container, stream),
      duration=_expected_duration(container, stream),
      codec=stream.codec_context.name,
      audio=tuple(s.codec_context.name for s in container.streams.audio),
    )
  finally:
    container.close()
