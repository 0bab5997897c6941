"""Colorizing video files: streamed decode -> batch -> colorize -> encode, stable over time.

Frames are decoded one at a time (PyAV, which bundles FFmpeg's libraries), gathered into
batches of ``Colorizer.batch_size``, colorized (:meth:`engine.Colorizer.predict_network`
gives ab at the network size, :meth:`~engine.Colorizer.compose_full` joins it with the
frame's own full-resolution L) and handed to the encoder at once: at most one batch of frames
is held, so memory does not grow with the video's length.

Within a shot the predicted ab is averaged over time and restarts at shot cuts
(``inference/temporal.py``), so colours do not flicker; L is always the frame's own.

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
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import tqdm
from PIL import Image

from chromagan_jax.data import video_files
from chromagan_jax.errors import VideoError
from chromagan_jax.inference import engine, temporal

if TYPE_CHECKING:
  import av


# A decoded video ending more than this short of its declared duration is reported as
# truncated (a whole number of frame intervals, plus slack for audio-led durations).
TRUNCATION_FRAMES = 3
TRUNCATION_SLACK_S = 0.25


@dataclasses.dataclass(frozen=True)
class VideoOptions:
  """How to encode the output.

  Attributes:
    codec: FFmpeg encoder name (e.g. "libx264", "libx265", "libvpx-vp9"); None picks the
      output container's default (video_files.DEFAULT_CODECS / video_files.DEFAULT_CODEC).
    crf: constant rate factor (lower = better and bigger); None: video_files.DEFAULT_CRF of
      the codec.
    preset: x264/x265 speed preset (ultrafast ... veryslow).
    extension: output container extension (".mp4", ".mkv", ...); None keeps the input's
      (video_files.OUTPUT_EXTENSIONS).
    smoothing: temporal smoothing strength in [0, 1); 0 turns it off.
    cut_threshold: temporal.cut_score above which smoothing restarts.
    audio: keep the audio streams (copied when possible, else re-encoded).
  """

  codec: str | None = None
  crf: int | None = None
  preset: str = video_files.DEFAULT_PRESET
  extension: str | None = None
  smoothing: float = temporal.DEFAULT_SMOOTHING
  cut_threshold: float = temporal.CUT_THRESHOLD
  audio: bool = True

  def __post_init__(self):
    if not 0.0 <= self.smoothing < 1.0:
      raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
    if self.extension is not None and self.extension not in video_files.MUXERS:
      raise ValueError(
        f"unknown video container {self.extension!r}; known: {sorted(video_files.MUXERS)}"
      )
    if self.codec is not None:
      av = video_files.require_av()
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


def output_extension(input_path: str, options: VideoOptions) -> str:
  """The output container's extension for ``input_path``."""
  if options.extension is not None:
    return options.extension
  return video_files.OUTPUT_EXTENSIONS.get(
    os.path.splitext(input_path)[1].lower(), video_files.DEFAULT_OUTPUT_EXTENSION
  )


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
  codec = options.codec or video_files.DEFAULT_CODECS.get(ext, video_files.DEFAULT_CODEC)
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
  stream.pix_fmt = video_files.ODD_SIZE_PIX_FMT if odd else video_files.PIX_FMT
  crf = options.crf if options.crf is not None else video_files.DEFAULT_CRF.get(codec)
  opts = {}
  if crf is not None:
    opts["crf"] = str(crf)
  if codec in ("libx264", "libx265"):
    opts["preset"] = options.preset
  if codec == "libvpx-vp9":
    opts.update(video_files.VP9_OPTIONS)
    opts["b"] = "0"  # constant quality: CRF without a bit-rate cap.
  stream.options = opts
  # Keep the input's colour matrix tag (frames are converted to YUV with the same one).
  in_cc = in_stream.codec_context
  if in_cc.colorspace not in (None, 2):  # 2 = unspecified
    stream.codec_context.colorspace = in_cc.colorspace
  return stream


def _to_video_frame(rgb: np.ndarray, stream, in_colorspace) -> "av.VideoFrame":
  av = video_files.require_av()
  if stream.pix_fmt == "pal8":
    pal = Image.fromarray(rgb).quantize(video_files.GIF_COLOURS, method=Image.Quantize.MEDIANCUT)
    palette = np.zeros((video_files.GIF_COLOURS, 4), np.uint8)
    colours = np.asarray(pal.getpalette()[: 3 * video_files.GIF_COLOURS], np.uint8).reshape(-1, 3)
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
    av = video_files.require_av()
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
    codec = video_files.AUDIO_CODECS.get(ext, video_files.DEFAULT_AUDIO_CODEC)
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
    self.stream.bit_rate = video_files.AUDIO_BIT_RATE
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
  av = video_files.require_av()
  start = time.perf_counter()
  ext = os.path.splitext(output_path)[1].lower()
  if ext not in video_files.MUXERS:
    raise ValueError(f"{output_path}: unknown video container {ext!r}")
  container, in_video = video_files._open_input(path)
  tmp = temporary_path(output_path)
  os.makedirs(os.path.dirname(output_path) or ".", exist_ok=True)
  bar = None
  try:
    width, height = in_video.width, in_video.height
    in_audio = list(container.streams.audio) if options.audio and ext != ".gif" else []
    rate = in_video.average_rate or in_video.guessed_rate
    stamps = _Timestamps(in_video.time_base or fractions.Fraction(1, 90000), rate)
    smoother = temporal.TemporalSmoother(options.smoothing, options.cut_threshold)
    in_colorspace = in_video.codec_context.colorspace
    bar = tqdm.tqdm(
      total=video_files.frame_count_estimate(container, in_video),
      unit="frame",
      desc=os.path.basename(path),
      disable=not progress,
      file=sys.stderr,
      leave=False,
    )
    with av.open(tmp, "w", format=video_files.MUXERS[ext]) as out:
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
    reason = video_files._reason(e)
    raise VideoError(f"{path}: corrupt or unsupported video data ({reason})") from None
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
  expected = video_files._expected_duration(container, stream)
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


def frames_per_second(result: VideoResult) -> float:
  """Overall throughput of a :func:`colorize_video` call (compile time included)."""
  return result.frames / result.seconds if result.seconds > 0 else math.inf
