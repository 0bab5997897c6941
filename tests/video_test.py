"""Video colorization: streams, timestamps, audio, L fidelity, smoothing, flicker, bad input.

The clips are made here from bundled photos (a slow pan and zoom, a hard cut to another photo,
film grain, a sine tone), 96x64 at a rational 24000/1001 fps. The generator is configs/tiny.py
with random weights whose last layer is scaled up so that its ab varies across the picture
and from frame to frame (with the plain initialisation it is a near-constant 0.5). The tests
that compare colours frame by frame use lossless clips (FFV1, RGB) of five photos and
``helpers.colourful_generator_variables``, whose ab follows its input.
"""

import fractions
import os
import subprocess
import sys
import textwrap
import warnings

import av
import jax
import numpy as np
import pytest
import skimage.color
import skimage.data
from helpers import colourful_generator_variables, resize_antialiased
from PIL import Image

from chromagan_jax import colorize
from chromagan_jax.configs import tiny
from chromagan_jax.data import synthetic, video_files
from chromagan_jax.evaluation import video_flicker
from chromagan_jax.inference import engine, temporal, video
from chromagan_jax.model import predict
from chromagan_jax.ops import color
from chromagan_jax.ops.conv_policy import ConvPolicy
from chromagan_jax.weights import checkpoint

SIZE = (96, 64)  # (W, H)
SHOT = 12  # frames per shot; the cut is at frame SHOT.
RATE = fractions.Fraction(24000, 1001)
GRAIN = 3.0
# dec_conv6 kernel x 1000: ab spatial std ~0.06 (16 Lab units; glorot_uniform init, as the
# reference), frame-to-frame ~4 Lab units.
AB_GAIN = 1000.0
# L of the output vs the input, both decoded (Lab L units, 0-100). Measured: per-frame mean
# <= 1.51, 99th percentile 5.7 (gamut clipping of the strong random ab 0.31 mean, the rest is
# H.264 4:2:0 at CRF 18 on a 96x64 picture). An output one frame late gives a per-frame mean
# of ~4.5 on this pan.
L_MEAN_TOL = 2.5
L_P99_TOL = 9.0


def _photos():
  return [skimage.data.astronaut(), skimage.data.coffee()]


@pytest.fixture(scope="module")
def generator():
  config = tiny.get_config()
  model = predict.generator_from(config, ConvPolicy())
  size = config.model.image_size
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, size, size, 3)), train=False)
  params = dict(variables["params"])
  params["dec_conv6"] = dict(params["dec_conv6"])
  params["dec_conv6"]["kernel"] = params["dec_conv6"]["kernel"] * AB_GAIN
  return {**variables, "params": params}, config


@pytest.fixture(scope="module")
def colorizer(generator):
  variables, config = generator
  return engine.Colorizer(variables, config, batch_size=8, conv_impl="xla")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("clips") / "film.mp4")
  frames = synthetic.pan_zoom_frames(_photos(), SIZE, SHOT, grain=GRAIN)
  assert synthetic.write_clip(path, frames, SIZE, RATE) == 2 * SHOT
  return path


def _decode(path):
  """-> (time base, [(pts, uint8 RGB (H, W, 3))]) of the first video stream."""
  with av.open(path) as c:
    s = c.streams.video[0]
    frames = [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(s)]
    return s.time_base, frames


def _lightness(rgb):
  return np.asarray(color.rgb_to_lab(rgb)[..., 0])


def test_output_keeps_frames_rate_size_duration_audio(clip, colorizer, tmp_path):
  out = str(tmp_path / "out" / "film.mp4")
  result = video.colorize_video(clip, out, colorizer, progress=False)
  assert result.frames == 2 * SHOT and result.cuts == 1
  assert result.audio == ["aac copied"]
  src, dst = video_files.probe(clip), video_files.probe(out)
  assert (dst.width, dst.height) == SIZE and dst.frame_rate == RATE == src.frame_rate
  assert dst.frames == src.frames == 2 * SHOT
  assert dst.duration == pytest.approx(src.duration, abs=1e-3)
  assert dst.audio == ("aac",)
  with av.open(clip) as a, av.open(out) as b:
    sa, sb = a.streams.audio[0], b.streams.audio[0]
    assert sb.duration * sb.time_base == pytest.approx(sa.duration * sa.time_base, abs=1e-3)
    # The audio packets are the input's, byte for byte.
    pa = [bytes(p) for p in a.demux(sa) if p.size]
    pb = [bytes(p) for p in b.demux(sb) if p.size]
    assert pa == pb
  # Presentation times kept exactly (the encoder may pick another time base).
  (s_in, f_in), (s_out, f_out) = _decode(clip), _decode(out)
  times_in = [p * s_in for p, _ in f_in]
  times_out = [p * s_out for p, _ in f_out]
  assert times_out == times_in
  assert os.listdir(os.path.dirname(out)) == ["film.mp4"]  # no temporary left


def test_lightness_of_every_frame_is_the_inputs(clip, colorizer, tmp_path):
  out = str(tmp_path / "film.mkv")
  video.colorize_video(clip, out, colorizer, progress=False)
  (_, f_in), (_, f_out) = _decode(clip), _decode(out)
  assert len(f_in) == len(f_out) == 2 * SHOT
  for i, ((_, a), (_, b)) in enumerate(zip(f_in, f_out, strict=True)):
    diff = np.abs(_lightness(a) - _lightness(b))
    assert diff.mean() < L_MEAN_TOL, (i, diff.mean())
    assert np.percentile(diff, 99) < L_P99_TOL, (i, np.percentile(diff, 99))
    # The output is coloured (the test would pass for a grey copy otherwise).
    lab = np.asarray(color.rgb_to_lab(b))
    assert np.abs(lab[..., 1:]).mean() > 3.0


# Lossless clips (FFV1, RGB): two frames of each of five photos, so that every batch of
# LOSSLESS_BATCH holds frames of different photos. (W, H): as large as the network input, and
# smaller (ab shrunk from 64x64 to 40x24).
LOSSLESS_SIZES = ((96, 64), (40, 24))
LOSSLESS_BATCH = 4  # 10 frames: batches of 4, 4 and 2 (padded).


def _write_lossless(path, frames, size):
  """FFV1 in Matroska with RGB pixels (bgr0): decodes to exactly ``frames``."""
  with av.open(path, "w") as out:
    s = out.add_stream("ffv1", rate=24)
    s.width, s.height = size
    s.pix_fmt = "bgr0"
    for i, rgb in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
      frame.pts = i
      out.mux(s.encode(frame))
    out.mux(s.encode(None))


@pytest.fixture(scope="module")
def colourful():
  """A Colorizer on the input-sensitive test generator (ab moves by up to ~0.35 with L)."""
  config = tiny.get_config()
  variables = colourful_generator_variables(config)
  return engine.Colorizer(variables, config, batch_size=LOSSLESS_BATCH, conv_impl="xla")


@pytest.fixture(scope="module")
def lossless_runs(colourful, tmp_path_factory):
  """Per size in LOSSLESS_SIZES, a lossless clip colorized without smoothing: (frames written,
  [(input, output)] as the frame hook saw them, output frames decoded from the file)."""
  photos = [*_photos(), skimage.data.chelsea(), skimage.data.rocket()]
  photos.append(skimage.data.immunohistochemistry())
  runs = {}
  for size in LOSSLESS_SIZES:
    frames = list(synthetic.pan_zoom_frames(photos, size, 2))
    folder = tmp_path_factory.mktemp("lossless")
    src, dst = str(folder / "in.mkv"), str(folder / "out.mkv")
    _write_lossless(src, frames, size)
    seen = []
    options = video.VideoOptions(smoothing=0.0)
    hook = lambda rgb, colour, seen=seen: seen.append((rgb.copy(), colour.copy()))
    video.colorize_video(src, dst, colourful, options, progress=False, frame_hook=hook)
    runs[size] = frames, seen, [rgb for _, rgb in _decode(dst)[1]]
  return runs


@pytest.mark.parametrize("size", LOSSLESS_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_frame_is_coloured_as_that_frame_alone(colourful, lossless_runs, size):
  """Smoothing off, each output frame is the colorizer's prediction for its input frame on
  its own, whatever its place in a batch (a batch coloured with one frame's ab, or frames
  paired with their neighbours' ab, fail)."""
  frames, seen, decoded = lossless_runs[size]
  assert len(seen) == len(decoded) == len(frames) == 10
  first_ab = colourful.predict_network(frames[:1])[1][0]
  for i, (frame, (rgb, colour)) in enumerate(zip(frames, seen, strict=True)):
    np.testing.assert_array_equal(rgb, frame, err_msg=f"frame {i}: input not lossless")
    alone = colourful.compose_full(frame, colourful.predict_network([frame])[1][0])
    # Measured: bit-identical (the generator's rows do not interact in inference).
    assert np.abs(colour.astype(int) - alone).max() <= 1, i
    if i >= 2:  # Another photo than frame 0: its own ab differs (measured mean 7.1-12 levels).
      other = colourful.compose_full(frame, first_ab)
      assert np.abs(other.astype(int) - alone).mean() > 3.0, i
  # The file holds those frames, in order (H.264 4:2:0 at CRF 18 of these strong colours:
  # measured mean error 3.2-11 levels to the frame's own output, >= 11.3 to any other's).
  for i, rgb in enumerate(decoded):
    errors = [np.abs(rgb.astype(int) - colour).mean() for _, colour in seen]
    assert int(np.argmin(errors)) == i, (i, errors)


def test_frames_smaller_than_the_network_input_get_antialiased_colours(colourful, lossless_runs):
  """ab shrunk from the network size to a smaller frame is antialiased: each output frame
  matches a scikit-image composition of the frame's own predicted ab resized with the
  matching prefilter (helpers.resize_antialiased), not plain bilinear sampling."""
  frames, seen, _ = lossless_runs[(40, 24)]
  assert max(frames[0].shape[:2]) < colourful.image_size
  for i, (frame, (_, colour)) in enumerate(zip(frames, seen, strict=True)):
    ab = np.asarray(colourful.predict_network([frame])[1][0], np.float64)
    ab8 = resize_antialiased(np.clip(ab * 255.0, 0.0, 255.0), frame.shape[:2])
    lightness = skimage.color.rgb2lab(frame)[..., :1]
    lab = np.concatenate([lightness, ab8 - 128.0], axis=-1)
    # scikit-image clips out-of-gamut colours in XYZ, color.py in linear RGB: compare in gamut.
    with warnings.catch_warnings():  # "negative Z values clipped": those pixels are left out.
      warnings.simplefilter("ignore", UserWarning)
      linear = skimage.color.lab2xyz(lab) @ skimage.color.colorconv.rgb_from_xyz.T
      want = skimage.color.lab2rgb(lab) * 255.0
    in_gamut = np.all((linear > 1e-4) & (linear < 1 - 1e-4), axis=-1)
    assert in_gamut.mean() > 0.6, (i, in_gamut.mean())
    diff = np.abs(colour.astype(np.float64) - want)[in_gamut]
    # Measured: mean <= 0.89, 99th percentile <= 7.4 (a tent and a Gaussian differ at sharp
    # colour edges); without antialiasing mean up to 2.5, 99th percentile up to 15.
    assert diff.mean() < 1.2 and np.percentile(diff, 99) < 9.0, (i, diff.mean())


def test_cut_detected_and_resets_smoothing(clip, colorizer):
  frames = [rgb for _, rgb in _decode(clip)[1]]
  smoother = temporal.TemporalSmoother(strength=0.6)
  raw, smoothed, cuts = [], [], []
  for i in range(0, len(frames), colorizer.batch_size):
    batch = frames[i : i + colorizer.batch_size]
    lightness, ab = colorizer.predict_network(batch)
    out, cut = smoother(lightness, ab, len(batch))
    raw.append(np.asarray(ab)[: len(batch)])
    smoothed.append(np.asarray(out)[: len(batch)])
    cuts.append(cut)
  raw, smoothed, cuts = np.concatenate(raw), np.concatenate(smoothed), np.concatenate(cuts)
  assert np.flatnonzero(cuts).tolist() == [SHOT]
  # A restart takes the new frame's own prediction; within a shot the past is mixed in.
  np.testing.assert_allclose(smoothed[SHOT], raw[SHOT], atol=1e-6)
  np.testing.assert_allclose(smoothed[0], raw[0], atol=1e-6)
  for t in (1, SHOT - 1, SHOT + 1, 2 * SHOT - 1):
    assert np.abs(smoothed[t] - raw[t]).mean() > 1e-3, t
  # Off: predictions pass through, cuts are still found.
  off = temporal.TemporalSmoother(strength=0.0)
  lightness, ab = colorizer.predict_network(frames[SHOT - 4 : SHOT + 4])
  out, cut = off(lightness, ab, 8)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(ab))
  assert cut.tolist() == [False] * 4 + [True] + [False] * 3


def test_smoothing_lowers_flicker_without_lowering_psnr(clip, colorizer):
  result = video_flicker.evaluate_video(clip, colorizer)
  flicker, psnr = result["flicker"], result["psnr"]
  assert result["frames"] == 2 * SHOT and result["cuts"] == 1
  assert result["static_fraction"] > 0.2
  # Measured: 1.37 smoothed, 2.54 unsmoothed, 0.72 for the video's own colours.
  assert flicker["colorized"] < 0.7 * flicker["unsmoothed"]
  assert psnr["colorized"] >= psnr["unsmoothed"] - 0.05
  off = video_flicker.evaluate_video(clip, colorizer, smoothing=0.0)
  assert off["flicker"]["colorized"] == pytest.approx(off["flicker"]["unsmoothed"])


def test_variable_frame_rate_timestamps_kept(colorizer, tmp_path):
  path = str(tmp_path / "vfr.mkv")
  frames = list(synthetic.pan_zoom_frames(_photos()[:1], SIZE, 10))
  pts = [0, 40, 80, 100, 120, 200, 240, 250, 260, 400]  # ms
  with av.open(path, "w") as out:
    s = out.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = *SIZE, "yuv420p"
    s.codec_context.time_base = fractions.Fraction(1, 1000)
    for p, rgb in zip(pts, frames, strict=True):
      f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
      f.pts, f.time_base = p, fractions.Fraction(1, 1000)
      out.mux(s.encode(f))
    out.mux(s.encode(None))
  for ext in (".mkv", ".mp4"):
    dst = str(tmp_path / f"out{ext}")
    video.colorize_video(path, dst, colorizer, progress=False)
    time_base, f_out = _decode(dst)
    assert [p * time_base for p, _ in f_out] == [fractions.Fraction(p, 1000) for p in pts]


@pytest.mark.parametrize(
  "ext, audio_codec, out_ext, video_codec, audio_note",
  [
    (".webm", "libopus", None, "vp9", "opus copied"),
    # AVI becomes mp4 (ffmpeg's mp4 muxer takes PCM as ISO 23003-5 ipcm).
    (".avi", "pcm_s16le", None, "h264", "pcm_s16le copied"),
    (".mkv", "aac", ".webm", "vp9", "aac -> libopus re-encoded"),
  ],
)
def test_other_containers(colorizer, tmp_path, ext, audio_codec, out_ext, video_codec, audio_note):
  src = str(tmp_path / f"in{ext}")
  frames = synthetic.pan_zoom_frames(_photos()[:1], SIZE, 6)
  codec = {".webm": "libvpx-vp9", ".avi": "mpeg4"}.get(ext, "libx264")
  synthetic.write_clip(src, frames, SIZE, RATE, codec=codec, audio_codec=audio_codec)
  options = video.VideoOptions(extension=out_ext)
  dst = str(tmp_path / f"out{video.output_extension(src, options)}")
  result = video.colorize_video(src, dst, colorizer, options, progress=False)
  assert result.audio[0].startswith(audio_note), result.audio
  info = video_files.probe(dst)
  assert info.codec == video_codec and info.frames == 6 and (info.width, info.height) == SIZE
  assert len(info.audio) == 1
  assert info.duration == pytest.approx(video_files.probe(src).duration, abs=0.05)
  with av.open(dst) as c:  # the audio decodes, and lasts as long as the input's
    seconds = sum(f.samples / f.sample_rate for f in c.decode(audio=0))
  assert seconds == pytest.approx(6 / RATE, abs=0.03)


def test_animated_gif(colorizer, tmp_path):
  src = str(tmp_path / "anim.gif")
  synthetic.write_clip(src, synthetic.pan_zoom_frames(_photos(), SIZE, 4), SIZE, 10, codec="gif")
  assert video_files.is_video(src)
  dst = str(tmp_path / "out" / "anim.gif")
  video.colorize_video(src, dst, colorizer, progress=False)
  _, frames = _decode(dst)
  assert len(frames) == 8 and frames[0][1].shape == (SIZE[1], SIZE[0], 3)
  lab = np.asarray(color.rgb_to_lab(frames[3][1]))
  assert np.abs(lab[..., 1:]).mean() > 3.0


def test_odd_size_uses_444(colorizer, tmp_path):
  src = str(tmp_path / "odd.mkv")
  size = (33, 21)
  synthetic.write_clip(src, synthetic.pan_zoom_frames(_photos()[:1], size, 3), size, codec="ffv1")
  dst = str(tmp_path / "odd_out.mp4")
  video.colorize_video(src, dst, colorizer, progress=False)
  with av.open(dst) as c:
    s = c.streams.video[0]
    assert (s.width, s.height, s.codec_context.pix_fmt) == (33, 21, "yuv444p")


def _bad_inputs(folder, clip):
  """name -> (path, words the message must contain)."""
  out = {}
  empty = os.path.join(folder, "empty.mp4")
  open(empty, "wb").close()
  out["empty"] = (empty, "empty file")
  text = os.path.join(folder, "notes.mp4")
  with open(text, "w") as f:
    f.write("not a video\n" * 20)
  out["not a video"] = (text, "not a video file")
  data = open(clip, "rb").read()
  half_mp4 = os.path.join(folder, "half.mp4")
  with open(half_mp4, "wb") as f:
    f.write(data[: len(data) // 2])
  out["truncated mp4"] = (half_mp4, "not a video file")
  mkv = os.path.join(folder, "full.mkv")
  synthetic.write_clip(mkv, synthetic.pan_zoom_frames(_photos(), SIZE, SHOT), SIZE, RATE)
  half_mkv = os.path.join(folder, "half.mkv")
  data = open(mkv, "rb").read()
  with open(half_mkv, "wb") as f:
    f.write(data[: len(data) // 2])
  out["truncated mkv"] = (half_mkv, "truncated")
  audio = os.path.join(folder, "sound.mp4")
  with av.open(audio, "w") as c:
    s = c.add_stream("aac", rate=16000)
    s.layout = "mono"
    f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    f.sample_rate = 16000
    c.mux(s.encode(f))
    c.mux(s.encode(None))
  out["no video stream"] = (audio, "no video stream")
  avi = os.path.join(folder, "mpeg4.avi")
  synthetic.write_clip(avi, synthetic.pan_zoom_frames(_photos()[:1], SIZE, 3), SIZE, codec="mpeg4")
  unknown = os.path.join(folder, "unknown.avi")
  with open(unknown, "wb") as f:
    f.write(open(avi, "rb").read().replace(b"FMP4", b"ZZZZ"))
  out["unsupported codec"] = (unknown, "unsupported video codec")
  os.remove(mkv)
  os.remove(avi)
  return out


def test_bad_inputs_one_line_no_output(clip, colorizer, tmp_path):
  bad = _bad_inputs(str(tmp_path), clip)
  out_dir = tmp_path / "out"
  for name, (path, words) in bad.items():
    with pytest.raises(video.VideoError) as e:
      video.colorize_video(path, str(out_dir / "x.mp4"), colorizer, progress=False)
    msg = str(e.value)
    assert path in msg and words in msg and "\n" not in msg, (name, msg)
  assert not out_dir.exists() or os.listdir(out_dir) == []


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupt_leaves_no_output(clip, colorizer, tmp_path, error):
  seen = []

  def hook(rgb, colour):
    seen.append(1)
    if len(seen) == 10:
      raise error("stop")

  out = tmp_path / "film.mp4"
  with pytest.raises(error):
    video.colorize_video(clip, str(out), colorizer, progress=False, frame_hook=hook)
  assert len(seen) == 10
  assert os.listdir(tmp_path) == []


MEMORY_SIZE = (320, 240)
MEMORY_FRAMES = 240
# Resident size sampled after each batch of the long clip: its growth from frame
# MEMORY_FRAMES // 2 to the end must stay under MEMORY_GROWTH_MB. Keeping each output frame
# would add 120 x 320 x 240 x 3 bytes = 27.6 MB over that half.
MEMORY_GROWTH_MB = 8.0
_MEMORY_SCRIPT = textwrap.dedent(
  """
  import os, sys
  sys.path.insert(0, {root!r})
  import jax, numpy as np
  jax.config.update("jax_disable_most_optimizations", True)
  from chromagan_jax.inference import engine, video
  from chromagan_jax.model import predict
  from chromagan_jax.ops.conv_policy import ConvPolicy
  from chromagan_jax.configs import tiny
  config = tiny.get_config()
  model = predict.generator_from(config, ConvPolicy())
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3)), train=False)
  c = engine.Colorizer(variables, config, batch_size=8, conv_impl="xla")
  options = video.VideoOptions(preset="ultrafast")
  page = os.sysconf("SC_PAGE_SIZE")
  keep = os.environ.get("KEEP_FRAMES") == "1"  # The failure the test guards against.
  kept, count = [], [0]

  def hook(rgb, colour):
    if keep:
      kept.append(colour.copy())
    count[0] += 1
    if count[0] % 8 == 0:
      with open("/proc/self/statm") as f:
        print(name, count[0], int(f.read().split()[1]) * page // 1024, flush=True)

  for name in sys.argv[1:]:
    video.colorize_video(name, name + ".out.mp4", c, options, progress=False, frame_hook=hook)
    count[0] = 0
  """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_memory_flat_for_a_10x_longer_video(tmp_path):
  """Resident size over the second half of a 240-frame video, colorized in one fresh process
  after a 24-frame one (which pays the compile).

  Why not the peak after each video: the process keeps growing for its first ~80-140 frames
  (measured +17-19 MB from frame 8 to frame 136 of a first video, +6 MB from frame 8 to 80 of
  the second): glibc's per-thread malloc arenas (XLA's, FFmpeg's decoder and encoder threads)
  fill one after another, as scheduling happens to place work (with MALLOC_ARENA_MAX=1 the
  growth ends by frame 24). So the peak grew 15-18 MB from the 24-frame video to the 240-frame
  one on some runs, 8-9 MB on others, whatever the length. After that warm-up the resident size
  is flat: measured +0.05 to +0.3 MB from frame 120 to frame 240 (and within 1 MB from frame
  160 to 960 of a 960-frame video); with every output frame kept (KEEP_FRAMES=1) +27.1 MB.
  """
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  clips = []
  for n in (24, MEMORY_FRAMES):
    clips.append(str(tmp_path / f"in{n}.mp4"))
    frames = synthetic.pan_zoom_frames(_photos(), MEMORY_SIZE, n // 2)
    synthetic.write_clip(clips[-1], frames, MEMORY_SIZE, preset="ultrafast")
  script = tmp_path / "mem.py"
  script.write_text(_MEMORY_SCRIPT.format(root=root))
  proc = subprocess.run(
    [sys.executable, str(script), *clips], capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  samples = [line.split() for line in proc.stdout.splitlines() if line.startswith(clips[-1])]
  rss = {int(frame): int(kb) / 1024 for _, frame, kb in samples}  # frame -> MB
  assert sorted(rss) == list(range(8, MEMORY_FRAMES + 1, 8)), proc.stdout[-3000:]
  half = MEMORY_FRAMES // 2
  growth = max(v for frame, v in rss.items() if frame > half) - rss[half]
  assert growth < MEMORY_GROWTH_MB, f"resident size grew {growth:.1f} MB from frame {half}: {rss}"


def test_cli_takes_videos_beside_photos(clip, generator, tmp_path):
  variables, config = generator
  ckpt = str(tmp_path / "ckpt")
  checkpoint.save_generator(ckpt, variables, config, step=1)
  clips = tmp_path / "clips"
  clips.mkdir()
  os.link(clip, clips / "film.mov")  # a mov container holding H.264 + AAC
  (clips / "broken.mkv").write_bytes(b"\x1a\x45\xdf\xa3 not really matroska")
  (clips / "notes.txt").write_text("not picked up by the folder walk")
  photo = tmp_path / "cat.png"
  Image.fromarray(skimage.data.chelsea()[::4, ::4]).save(photo)
  out = tmp_path / "out"
  messages = []
  argv = ["--ckpt", ckpt, "--output", str(out), "--conv_impl", "xla", "--no_progress"]
  status = colorize.main([*argv, clip, str(clips), str(photo)], log=messages.append)
  log = "\n".join(messages)
  assert status == 0, log
  assert sorted(os.listdir(out)) == ["cat.png", "film.mov", "film.mp4"], log
  broken = [m for m in messages if "broken.mkv" in m]
  assert len(broken) == 1 and broken[0].startswith(f"skipped {clips / 'broken.mkv'}: "), log
  assert "1 image(s) and 2 video(s)" in log and "1 input(s) skipped" in log
  for name in ("film.mp4", "film.mov"):
    info = video_files.probe(str(out / name))
    assert info.frames == 2 * SHOT and info.audio == ("aac",) and info.frame_rate == RATE
  # Smoothing off gives other colours from the second frame on; a bad value is one line.
  raw = tmp_path / "raw"
  status = colorize.main([*argv[:3], str(raw), *argv[4:], "--no_smoothing", clip])
  assert status == 0
  a = [rgb for _, rgb in _decode(str(out / "film.mp4"))[1]]
  b = [rgb for _, rgb in _decode(str(raw / "film.mp4"))[1]]
  assert np.abs(a[5].astype(int) - b[5]).mean() > 0.5
  messages.clear()
  assert colorize.main([*argv, "--smoothing", "1.5", clip], log=messages.append) == 1
  assert messages == ["error: smoothing must be in [0, 1), got 1.5"]
