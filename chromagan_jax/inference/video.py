"""Colorizing video files: streamed decode -> batch -> colorize -> encode, stable over time.

Frames are decoded one at a time (PyAV, which bundles FFmpeg's libraries), gathered into
batches of ``Colorizer.batch_size``, colorized (:meth:`engine.Colorizer.predict_network`
gives ab at the network size, :meth:`~engine.Colorizer.compose_full` joins it with the
frame's own full-resolution L) and handed to the encoder at once: at most one batch of frames
is held, so memory does not grow with the video's length.

Temporal smoothing (:class:`TemporalSmoother`): per-frame predictions of the same object vary
from frame to frame (flicker). Within a shot the predicted ab, at the network resolution, is
an exponential moving average over time, weighted per pixel by how still the picture is there::

    w_t = strength * exp(-(|L_t - L_{t-1}| / MOTION_L_SCALE)^2)     (per pixel, network size)
    ab_t' = w_t * ab_{t-1}' + (1 - w_t) * ab_t

so static regions are averaged over ~1 / (1 - strength) frames while moving ones follow the
current prediction (no colour trails). At a shot cut (:func:`cut_score` above
``CUT_THRESHOLD``, computed from L alone) the average restarts from the new frame. Only ab is
smoothed: L is always the input frame's own, so no detail is blurred.

Output: the input's container (mp4, mov, mkv, webm, gif; anything else becomes mp4) with H.264
(libx264, yuv420p, CRF 18, preset medium) or, for webm, VP9 (libvpx-vp9, CRF 32, constant
quality), the same size, the frame timestamps of the input (so rational and variable frame
rates are kept) and its audio streams: copied packet for packet when the output container
accepts their codec, else re-encoded (AAC; Opus for webm). Odd widths or heights, which 4:2:0
chroma cannot hold, use yuv444p. GIF output gets an adaptive 256-colour palette per frame.
The output is written to a hidden temporary file beside the final name and renamed at the
end: an error or Ctrl-C leaves nothing under the final name.
"""

import dataclasses
import fractions
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from PIL import Image

from chromagan_jax import extras
from chromagan_jax.errors import VideoError
from chromagan_jax.inference import engine

if TYPE_CHECKING:
  import av


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

# Temporal smoothing (see the module docstring). strength 0.6 averages a static region over
# ~2.5 frames (1 / (1 - 0.6)); MOTION_L_SCALE is in L units (0-100): a pixel whose L changed by
# 3 units keeps exp(-1) = 37% of the smoothing, by 6 units 2%.
DEFAULT_SMOOTHING = 0.6
MOTION_L_SCALE = 3.0
# Shot cuts: cut_score is the L1 distance between the L histograms of consecutive frames
# (CUT_BINS bins over [0, 100], each normalised to sum 1; the distance lies in [0, 2]) plus
# the mean absolute difference of L on a CUT_GRID x CUT_GRID grid of block means, divided by
# CUT_MAD_SCALE L units. A pan or zoom moves content but keeps the histogram and, at block
# scale, most of the picture; a cut changes both (measured on tests/video_test.py's clip, a
# slow pan and zoom with grain: 0.10-0.16 between frames of a shot, 1.54 at the cut between
# two bundled photos).
CUT_BINS = 32
CUT_GRID = 8
CUT_MAD_SCALE = 25.0
CUT_THRESHOLD = 0.6
# A decoded video ending more than this short of its declared duration is reported as
# truncated (a whole number of frame intervals, plus slack for audio-led durations).
TRUNCATION_FRAMES = 3
TRUNCATION_SLACK_S = 0.25


@dataclasses.dataclass(frozen=True)
class VideoOptions:
  """How to encode the output.

  Attributes:
    codec: FFmpeg encoder name (e.g. "libx264", "libx265", "libvpx-vp9"); None picks the
      output container's default (DEFAULT_CODECS / DEFAULT_CODEC).
    crf: constant rate factor (lower = better and bigger); None: DEFAULT_CRF of the codec.
    preset: x264/x265 speed preset (ultrafast ... veryslow).
    extension: output container extension (".mp4", ".mkv", ...); None keeps the input's
      (OUTPUT_EXTENSIONS).
    smoothing: temporal smoothing strength in [0, 1); 0 turns it off.
    cut_threshold: cut_score above which smoothing restarts.
    audio: keep the audio streams (copied when possible, else re-encoded).
  """

  codec: str | None = None
  crf: int | None = None
  preset: str = DEFAULT_PRESET
  extension: str | None = None
  smoothing: float = DEFAULT_SMOOTHING
  cut_threshold: float = CUT_THRESHOLD
  audio: bool = True

  def __post_init__(self):
    if not 0.0 <= self.smoothing < 1.0:
      raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
    if self.extension is not None and self.extension not in MUXERS:
      raise ValueError(f"unknown video container {self.extension!r}; known: {sorted(MUXERS)}")
    if self.codec is not None:
      av = require_av()
      try:
        av.codec.Codec(self.codec, "w")
      except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError / ValueError by version.
        raise ValueError(f"video encoder {self.codec!r} is not in PyAV's FFmpeg") from None


@dataclasses.dataclass
class VideoResult:
  """What :func:`colorize_video` wrote."""

  path: str
  frames: int
  cuts: int
  audio: list[str]  # one line per audio stream: "aac copied" / "pcm_s16le -> aac re-encoded"
  seconds: float


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


def output_extension(input_path: str, options: VideoOptions) -> str:
  """The output container's extension for ``input_path``."""
  if options.extension is not None:
    return options.extension
  return OUTPUT_EXTENSIONS.get(os.path.splitext(input_path)[1].lower(), DEFAULT_OUTPUT_EXTENSION)


# --------------------------------------------------------------------------------------------
# Temporal smoothing and cut detection, at the network resolution, on device.


def cut_score(prev_l, cur_l):
  """How much two frames' network L (S, S) in [0, 1] differ as pictures; ~0 within a shot.

  Histogram L1 distance (in [0, 2]) + coarse block-mean MAD / CUT_MAD_SCALE; see CUT_*.
  """
  lightness = jnp.stack([prev_l, cur_l]) * 100.0
  bins = jnp.clip((lightness / 100.0 * CUT_BINS).astype(jnp.int32), 0, CUT_BINS - 1)
  hist = jax.vmap(lambda b: jnp.bincount(b.ravel(), length=CUT_BINS))(bins)
  hist = hist / hist.sum(axis=1, keepdims=True)
  s = lightness.shape[-1]
  g = CUT_GRID
  blocks = lightness[:, : s // g * g, : s // g * g].reshape(2, g, s // g, g, s // g)
  blocks = blocks.mean(axis=(2, 4))
  mad = jnp.mean(jnp.abs(blocks[1] - blocks[0]))
  return jnp.sum(jnp.abs(hist[1] - hist[0])) + mad / CUT_MAD_SCALE


@jax.jit
def _smooth_scan(carry, lightness, ab, valid, strength, threshold):
  """EMA over a batch. carry = (prev L (S, S), prev smoothed ab (S, S, 2), has_prev bool).

  Returns (carry, smoothed ab (N, S, S, 2), cut flags (N,) bool, cut scores (N,)).
  """

  def step(carry, x):
    prev_l, prev_ab, has_prev = carry
    cur_l, cur_ab, ok = x
    score = cut_score(prev_l, cur_l)
    cut = has_prev & (score > threshold)
    keep = has_prev & ~cut
    motion = (cur_l - prev_l) * 100.0 / MOTION_L_SCALE
    w = jnp.where(keep, strength * jnp.exp(-motion * motion), 0.0)[..., None]
    out = w * prev_ab + (1.0 - w) * cur_ab
    new = (cur_l, out, jnp.bool_(True))
    # Padding rows (ok = False) leave the state alone.
    carry = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, carry)
    return carry, (out, cut & ok, jnp.where(has_prev & ok, score, 0.0))

  carry, (out, cuts, scores) = jax.lax.scan(step, carry, (lightness, ab, valid))
  return carry, out, cuts, scores


class TemporalSmoother:
  """Exponential moving average of network ab within shots (see the module docstring).

  Args:
    strength: weight of the past in [0, 1); 0 passes predictions through (cuts still counted).
    cut_threshold: :func:`cut_score` above which the average restarts.
  """

  def __init__(self, strength: float = DEFAULT_SMOOTHING, cut_threshold: float = CUT_THRESHOLD):
    self.strength = float(strength)
    self.cut_threshold = float(cut_threshold)
    self.carry = None
    self.cuts = 0
    self.frames = 0

  def __call__(self, lightness, ab, n_valid: int):
    """lightness (N, S, S) in [0, 1], ab (N, S, S, 2) in [0, 1] (the first ``n_valid`` rows
    are frames, in order) -> (smoothed ab (N, S, S, 2), cut flags (n_valid,) numpy bool)."""
    if self.carry is None:
      s = lightness.shape[1:]
      self.carry = (jnp.zeros(s, jnp.float32), jnp.zeros((*s, 2), jnp.float32), jnp.bool_(False))
    valid = jnp.arange(lightness.shape[0]) < n_valid
    self.carry, out, cuts, _ = _smooth_scan(
      self.carry, lightness, ab, valid, self.strength, self.cut_threshold
    )
    cuts = np.asarray(cuts)[:n_valid]
    self.cuts += int(cuts.sum())
    self.frames += n_valid
    return out, cuts


# --------------------------------------------------------------------------------------------
# Decoding.


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


class _Timestamps:
  """Strictly increasing output pts in the input stream's time base, from decoded frames.

  The input's pts are kept (variable frame rates stay variable); a missing or non-increasing
  one becomes the previous + one nominal frame interval.
  """

  def __init__(self, time_base: fractions.Fraction, rate: fractions.Fraction | None):
    self.time_base = time_base
    step = 1 / (rate * time_base) if rate else 1
    self.step = max(1, round(step))
    self.last = None

  def __call__(self, pts: int | None) -> int:
    if pts is None or (self.last is not None and pts <= self.last):
      pts = 0 if self.last is None else self.last + self.step
    self.last = pts
    return pts


# --------------------------------------------------------------------------------------------
# Encoding.


def _video_encoder(out, in_stream, ext: str, options: VideoOptions, width: int, height: int):
  codec = options.codec or DEFAULT_CODECS.get(ext, DEFAULT_CODEC)
  rate = in_stream.average_rate or in_stream.guessed_rate or fractions.Fraction(25)
  stream = out.add_stream(codec, rate=rate)
  stream.width, stream.height = width, height
  time_base = in_stream.time_base or 1 / rate
  stream.codec_context.time_base = time_base
  stream.time_base = time_base
  if codec == "gif":
    stream.pix_fmt = "pal8"
    return stream
  odd = width % 2 or height % 2
  stream.pix_fmt = ODD_SIZE_PIX_FMT if odd else PIX_FMT
  crf = options.crf if options.crf is not None else DEFAULT_CRF.get(codec)
  opts = {}
  if crf is not None:
    opts["crf"] = str(crf)
  if codec in ("libx264", "libx265"):
    opts["preset"] = options.preset
  if codec == "libvpx-vp9":
    opts.update(VP9_OPTIONS)
    opts["b"] = "0"  # constant quality: CRF without a bit-rate cap.
  stream.options = opts
  # Keep the input's colour matrix tag (frames are converted to YUV with the same one).
  in_cc = in_stream.codec_context
  if in_cc.colorspace not in (None, 2):  # 2 = unspecified
    stream.codec_context.colorspace = in_cc.colorspace
  return stream


def _to_video_frame(rgb: np.ndarray, stream, in_colorspace) -> "av.VideoFrame":
  av = require_av()
  if stream.pix_fmt == "pal8":
    pal = Image.fromarray(rgb).quantize(GIF_COLOURS, method=Image.Quantize.MEDIANCUT)
    palette = np.zeros((GIF_COLOURS, 4), np.uint8)
    colours = np.asarray(pal.getpalette()[: 3 * GIF_COLOURS], np.uint8).reshape(-1, 3)
    palette[: len(colours), 0] = 255
    palette[: len(colours), 1:] = colours
    # PyAV takes ARGB palettes (alpha first).
    return av.VideoFrame.from_ndarray((np.asarray(pal), palette), format="pal8")
  frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
  colorspace = in_colorspace if in_colorspace not in (None, 2) else None
  return frame.reformat(format=stream.pix_fmt, dst_colorspace=colorspace)


class _AudioPath:
  """One input audio stream into the output: packets copied, or decoded and re-encoded."""

  def __init__(self, out, in_stream, ext: str):
    av = require_av()
    self.in_stream = in_stream
    name = in_stream.codec_context.name
    try:
      canonical = av.codec.Codec(name, "r").name
    except Exception:  # noqa: BLE001
      canonical = name
    self.copy = canonical in out.supported_codecs or name in out.supported_codecs
    if self.copy:
      self.stream = out.add_stream_from_template(in_stream)
      self.note = f"{canonical} copied"
      return
    codec = AUDIO_CODECS.get(ext, DEFAULT_AUDIO_CODEC)
    enc = av.codec.Codec(codec, "w")
    in_rate = in_stream.codec_context.sample_rate or 48000
    rates = enc.audio_rates
    rate = in_rate if not rates or in_rate in rates else max(rates)
    self.stream = out.add_stream(codec, rate=rate)
    layout = in_stream.codec_context.layout
    if layout is not None and layout.nb_channels > 2:
      self.stream.layout = "stereo"
    elif layout is not None:
      self.stream.layout = layout.name
    self.stream.bit_rate = AUDIO_BIT_RATE
    fmt = enc.audio_formats[0].name if enc.audio_formats else None
    self.resampler = av.AudioResampler(format=fmt, layout=self.stream.layout, rate=rate)
    self.note = f"{canonical} -> {codec} re-encoded ({ext} cannot hold {canonical})"

  def packet(self, out, packet):
    if self.copy:
      if packet.dts is None:  # a demuxer's end-of-stream flush packet.
        return
      packet.stream = self.stream
      out.mux(packet)
      return
    for frame in packet.decode():
      frame.pts = None  # the resampler and encoder renumber samples.
      for resampled in self.resampler.resample(frame):
        out.mux(self.stream.encode(resampled))

  def finish(self, out):
    if not self.copy:
      for resampled in self.resampler.resample(None):
        out.mux(self.stream.encode(resampled))
      out.mux(self.stream.encode(None))


# --------------------------------------------------------------------------------------------
# The whole file.


def temporary_path(path: str) -> str:
  """A hidden name beside ``path`` with the same extension (FFmpeg picks muxers by it)."""
  folder, name = os.path.split(path)
  return os.path.join(folder, f".{name}.part{os.getpid()}{os.path.splitext(name)[1]}")


def colorize_video(
  path: str,
  output_path: str,
  colorizer: engine.Colorizer,
  options: VideoOptions = VideoOptions(),  # noqa: B008 - frozen, immutable default.
  progress: bool = True,
  frame_hook: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> VideoResult:
  """Colorizes the video file ``path`` into ``output_path`` (its extension picks the muxer).

  Args:
    path: input video.
    output_path: final name; written as a temporary file beside it and renamed at the end.
    colorizer: the generator; its ``batch_size`` frames are held at a time.
    options: encoding and smoothing options.
    progress: tqdm bar (frames, fps, ETA) on stderr.
    frame_hook: called with (input uint8 (H, W, 3), output uint8 (H, W, 3)) per frame, in
      order, before encoding (tests and evaluation use it).

  Raises:
    VideoError: unreadable, empty, no video stream, unsupported codec, corrupt or truncated;
      the message names the file. Nothing is left at ``output_path`` (nor the temporary).
  """
  av = require_av()
  start = time.perf_counter()
  ext = os.path.splitext(output_path)[1].lower()
  if ext not in MUXERS:
    raise ValueError(f"{output_path}: unknown video container {ext!r}")
  container, in_video = _open_input(path)
  tmp = temporary_path(output_path)
  os.makedirs(os.path.dirname(output_path) or ".", exist_ok=True)
  bar = None
  try:
    width, height = in_video.width, in_video.height
    in_audio = list(container.streams.audio) if options.audio and ext != ".gif" else []
    rate = in_video.average_rate or in_video.guessed_rate
    stamps = _Timestamps(in_video.time_base or fractions.Fraction(1, 90000), rate)
    smoother = TemporalSmoother(options.smoothing, options.cut_threshold)
    in_colorspace = in_video.codec_context.colorspace
    bar = tqdm.tqdm(
      total=frame_count_estimate(container, in_video),
      unit="frame",
      desc=os.path.basename(path),
      disable=not progress,
      file=sys.stderr,
      leave=False,
    )
    with av.open(tmp, "w", format=MUXERS[ext]) as out:
      encoder = _video_encoder(out, in_video, ext, options, width, height)
      audio = {s.index: _AudioPath(out, s, ext) for s in in_audio}
      pending: list[tuple[np.ndarray, int]] = []
      written = 0

      def flush():
        nonlocal written
        rgbs = [rgb for rgb, _ in pending]
        lightness, ab = colorizer.predict_network(rgbs)
        ab, _ = smoother(lightness, ab, len(rgbs))
        for i, (rgb, pts) in enumerate(pending):
          colour = colorizer.compose_full(rgb, ab[i])
          if frame_hook is not None:
            frame_hook(rgb, colour)
          frame = _to_video_frame(colour, encoder, in_colorspace)
          frame.pts = pts
          frame.time_base = encoder.codec_context.time_base
          out.mux(encoder.encode(frame))
        written += len(pending)
        bar.update(len(pending))
        pending.clear()

      last_end = None
      for packet in container.demux(in_video, *in_audio):
        if packet.stream.index != in_video.index:
          audio[packet.stream.index].packet(out, packet)
          continue
        for frame in packet.decode():
          if (frame.width, frame.height) != (width, height):
            raise VideoError(
              f"{path}: frame size changes mid-stream ({width}x{height} -> "
              f"{frame.width}x{frame.height}); not supported"
            )
          pts = stamps(frame.pts)
          last_end = pts
          pending.append((frame.to_ndarray(format="rgb24"), pts))
          if len(pending) == colorizer.batch_size:
            flush()
      if pending:
        flush()
      if written == 0:
        raise VideoError(f"{path}: no video frame could be decoded (corrupt or truncated)")
      _check_complete(path, container, in_video, last_end, stamps, written)
      out.mux(encoder.encode(None))
      for a in audio.values():
        a.finish(out)
    os.replace(tmp, output_path)
  except av.FFmpegError as e:
    raise VideoError(f"{path}: corrupt or unsupported video data ({_reason(e)})") from None
  finally:
    if bar is not None:
      bar.close()
    container.close()
    if os.path.exists(tmp):
      os.remove(tmp)
  notes = [a.note for a in audio.values()]
  return VideoResult(output_path, written, smoother.cuts, notes, time.perf_counter() - start)


def _check_complete(path, container, stream, last_pts, stamps, frames):
  """VideoError when the decoded frames end well before the declared duration."""
  expected = _expected_duration(container, stream)
  if expected is None or last_pts is None or not stamps.time_base:
    return
  start = stream.start_time or 0
  interval = stamps.step * stamps.time_base
  end = float((last_pts - start + stamps.step) * stamps.time_base)
  missing = expected - end
  if missing > TRUNCATION_FRAMES * float(interval) + TRUNCATION_SLACK_S:
    raise VideoError(
      f"{path}: truncated or corrupt: decoded {frames} frames ({end:.2f} s) of a "
      f"{expected:.2f} s video"
    )


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


def frames_per_second(result: VideoResult) -> float:
  """Overall throughput of a :func:`colorize_video` call (compile time included)."""
  return result.frames / result.seconds if result.seconds > 0 else math.inf


# --------------------------------------------------------------------------------------------
# Synthetic clips (tests, evaluation, benchmarks): real photos with a slow pan and zoom.


def pan_zoom_frames(
  photos,
  size: tuple[int, int],
  frames_per_shot: int,
  zoom: float = 0.15,
  grain: float = 0.0,
  seed: int = 0,
) -> Iterator[np.ndarray]:
  """Yields uint8 (H, W, 3) frames, ``size`` = (W, H): for each photo a shot of
  ``frames_per_shot`` frames slowly panning left to right while zooming in by ``zoom``, then a
  hard cut to the next photo. ``grain`` adds Gaussian noise (std, 0-255 units) per frame, as
  film grain. One frame is made at a time."""
  rng = np.random.default_rng(seed)
  width, height = size
  for photo in photos:
    photo = np.asarray(photo)
    ph, pw = photo.shape[:2]
    aspect = width / height
    # The largest window of the output's aspect ratio, shrunk by the zoom and the pan room.
    base_w = min(pw, ph * aspect) * 0.8
    im = Image.fromarray(photo)
    for i in range(frames_per_shot):
      t = i / max(1, frames_per_shot - 1)
      win_w = base_w * (1.0 - zoom * t)
      win_h = win_w / aspect
      x0 = (pw - base_w) * (0.2 + 0.6 * t)
      y0 = (ph - win_h) / 2
      box = (x0, y0, x0 + win_w, y0 + win_h)
      frame = np.asarray(im.resize(size, Image.Resampling.BILINEAR, box=box), np.float32)
      if grain:
        frame = frame + rng.normal(0.0, grain, frame.shape)
      yield np.clip(np.round(frame), 0, 255).astype(np.uint8)


def write_clip(
  path: str,
  frames,
  size: tuple[int, int],
  rate: fractions.Fraction = fractions.Fraction(24),
  tone_hz: float | None = 440.0,
  codec: str = "libx264",
  crf: int = 12,
  preset: str = "veryfast",
  audio_codec: str | None = None,
  audio_rate: int | None = None,
) -> int:
  """Encodes uint8 (H, W, 3) ``frames`` (any iterable, consumed one at a time) at ``rate``
  into ``path``, with a sine tone of ``tone_hz`` as mono audio (``audio_codec``, default AAC,
  Opus in webm; ``audio_rate`` Hz, default 16 kHz, 48 kHz for Opus) as long as the video.
  Returns the number of frames."""
  av = require_av()
  ext = os.path.splitext(path)[1].lower()
  audio_codec = audio_codec or AUDIO_CODECS.get(ext, DEFAULT_AUDIO_CODEC)
  audio_rate = audio_rate or (48000 if audio_codec == "libopus" else 16000)
  with av.open(path, "w", format=MUXERS.get(ext, ext.lstrip("."))) as out:
    stream = out.add_stream(codec, rate=rate)
    stream.width, stream.height = size
    stream.pix_fmt = "rgb8" if codec == "gif" else PIX_FMT
    if codec in DEFAULT_CRF:
      stream.options = {"crf": str(crf)}
    if codec in ("libx264", "libx265"):
      stream.options = {**stream.options, "preset": preset}
    tone = None
    if tone_hz and codec != "gif":
      tone = out.add_stream(audio_codec, rate=audio_rate)
      tone.layout = "mono"
      fmt = tone.codec_context.codec.audio_formats[0].name
      resampler = av.AudioResampler(format=fmt, layout="mono", rate=audio_rate)
    n = samples = 0
    for rgb in frames:
      frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
      frame.pts = n
      out.mux(stream.encode(frame))
      n += 1
      if tone is not None:
        end = round(n / rate * audio_rate)
        t = np.arange(samples, end) / audio_rate
        wave = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)[None]
        chunk = av.AudioFrame.from_ndarray(wave, format="flt", layout="mono")
        chunk.sample_rate = audio_rate
        samples = end
        for r in resampler.resample(chunk):
          out.mux(tone.encode(r))
    out.mux(stream.encode(None))
    if tone is not None:
      for r in resampler.resample(None):
        out.mux(tone.encode(r))
      out.mux(tone.encode(None))
  return n
