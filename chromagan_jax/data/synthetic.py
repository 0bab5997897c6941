"""Synthetic clips (tests, evaluation, benchmarks): real photos with a slow pan and zoom.

Made from photos the caller passes, written with PyAV (the 'video' extra); nothing downloads.
"""

import fractions
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image

from chromagan_jax.data import video_files


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
  av = video_files.require_av()
  ext = os.path.splitext(path)[1].lower()
  audio_codec = audio_codec or video_files.AUDIO_CODECS.get(ext, video_files.DEFAULT_AUDIO_CODEC)
  audio_rate = audio_rate or (48000 if audio_codec == "libopus" else 16000)
  with av.open(path, "w", format=video_files.MUXERS.get(ext, ext.lstrip("."))) as out:
    stream = out.add_stream(codec, rate=rate)
    stream.width, stream.height = size
    stream.pix_fmt = "rgb8" if codec == "gif" else video_files.PIX_FMT
    if codec in video_files.DEFAULT_CRF:
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
