"""Times colorize.py's whole per-photo path, stage by stage, and the network in other runtimes.

  python bench/colorize_e2e.py                      # random paper-size weights, 0.3 / 2 / 12 MP
  python bench/colorize_e2e.py --ckpt DIR --sizes 12 --repeats 5 --markdown

Photos: JPEGs of 640x480 (0.3 MP), 1728x1152 (2 MP) and 4000x3000 (12 MP), made from a bundled
photo (scikit-image's chelsea) upscaled with Lanczos plus Gaussian grain (sigma 3 levels) so
that JPEG decoding and encoding cost what a camera photo's do; quality 90.

Stages (batch 1, warm: each program compiled by a first run; the median of --repeats):
  decode    images.read: Pillow decode + EXIF orientation -> uint8 RGB
  resize    images.resize to S x S (the training data's resize) + the network's L input
  network   the head-free generator (the checkpoint's conv_impl, 'auto' for the random
            weights: what colorize uses) -> ab (S, S, 2)
  compose   ab upsample (bilinear) to the photo's size, its full-resolution L, Lab -> sRGB,
            uint8 (engine.compose_host, OpenCV; the XLA compose for photos smaller
            than the network input)
  encode    JPEG, quality 95, no chroma subsampling (colorize.py's output)
and, for comparison in the same run: Pillow's resize for the resize stage; the compose stage
in XLA (engine.compose, on device, what colorize used before) and an 8-bit
Pillow/LittleCMS path (ImageCms Lab -> sRGB, ab upsampled by Pillow) for the compose stage,
with its error against ours; the network stage in TF/Keras (bench/keras_reference.py, the same
weights; it computes the class head too), ONNX Runtime and TFLite on the exported model
(chromagan_jax.inference.exporter), and JAX with XLA's own convolutions.

Loading (separate processes, one photo each): parameters read, peak RSS, checkpoint load time
and time to the first colorized photo, for the full generator (before head-free inference)
and the head-free one.

Folders (``--folder DIR``, or ``--synthetic N``: N grainy 12 MP JPEGs, ``--synthetic_mp`` to
change the size), instead of the above: colorize.py on the whole folder, in a fresh process
per run, "before" (``--before_root``: a checkout of older code, e.g. ``git archive BASE | tar
-x -C /tmp/base``; default: this tree with ``--workers 0``, the stages one after another) and
"after" (this tree, ``--workers``), and the network calls alone for the same photos (the
photos' batches through ``Colorizer.predict_network``, decoded beforehand, in a process of
their own), interleaved over ``--rounds``. Reported per run, from the colorizer's creation
(checkpoint loaded) to the end, warm compilation cache: photos/s, MP/s, cores busy (process
CPU time / wall time), peak RSS of the process (VmHWM), and wall / network.

  python bench/colorize_e2e.py --synthetic 12 --rounds 2
  python bench/colorize_e2e.py --folder /tmp/photos --before_root /tmp/base
"""

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common  # noqa: I001 (sets sys.path and TF env before the imports below)
import jax
import numpy as np
from PIL import Image, ImageCms

from chromagan_jax.data import images
from chromagan_jax.inference import engine, exporter
from chromagan_jax.model import networks, predict
from chromagan_jax.ops import color
from chromagan_jax.runtime import allocator
from chromagan_jax.weights import checkpoint

PHOTO_SIZES = {"0.3": (640, 480), "2": (1728, 1152), "12": (4000, 3000)}
GRAIN_SIGMA = 3.0
JPEG_INPUT_QUALITY = 90
STAGES = ("decode", "resize", "network", "compose", "encode")


def make_photo(folder, size, seed=0) -> str:
  """A grainy JPEG of ``size`` = (width, height) from a bundled photo; returns its path."""
  from skimage import data as skdata  # Only for the synthetic photos.

  w, h = size
  im = Image.fromarray(skdata.chelsea()).resize((w, h), Image.LANCZOS)
  grain = np.random.default_rng(seed).normal(0.0, GRAIN_SIGMA, (h, w, 3))
  rgb = np.clip(np.asarray(im, np.float32) + grain, 0, 255).astype(np.uint8)
  path = os.path.join(folder, f"photo_{w}x{h}.jpg")
  Image.fromarray(rgb).save(path, quality=JPEG_INPUT_QUALITY)
  return path


def count(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


# --------------------------------------------------------------------------------------------
# Loading: one process per variant.


def load_child(mode: str, ckpt: str, photo: str) -> dict:
  """Loads ``ckpt`` as colorize does ('head_free') or as it did before ('full') and colorizes
  ``photo``; run in a fresh process so that peak RSS is this alone."""
  t0 = time.perf_counter()
  variables, config = checkpoint.load_generator(ckpt, with_class_head=mode == "full")
  jax.block_until_ready(variables)
  load_s = time.perf_counter() - t0
  colorizer = engine.Colorizer(variables, config, batch_size=1)
  if mode == "full":  # the generator as it ran before: class head loaded and computed
    colorizer.model = colorizer.model.clone(with_class_head=True)
    colorizer.variables = variables
  t1 = time.perf_counter()
  next(colorizer.stream([images.read(photo)]))
  return {
    "mode": mode,
    "params_loaded": count(variables["params"]),
    "load_s": load_s,
    "first_photo_s": time.perf_counter() - t1,
    "peak_rss_mib": common.vm_hwm_mib(),
  }


def measure_loading(ckpt: str, photo: str) -> list[dict]:
  rows = []
  for mode in ("full", "head_free"):
    out = subprocess.run(
      [sys.executable, __file__, "--_load_child", mode, "--ckpt", ckpt, "--_photo", photo],
      capture_output=True,
      text=True,
      check=True,
    )
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
  return rows


# --------------------------------------------------------------------------------------------
# The per-photo path.


def encode_jpeg(rgb) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, format="JPEG", quality=95, subsampling=0)
  return buf.getvalue()


class Pipeline:
  """colorize's per-photo path split into its stages (the calls Colorizer makes)."""

  def __init__(self, colorizer: engine.Colorizer):
    self.c = colorizer

  def run(self, path) -> dict:
    t, times = time.perf_counter(), {}

    def lap(name):
      nonlocal t
      now = time.perf_counter()
      times[name] = now - t
      t = now

    photo = images.read(path)
    lap("decode")
    small = images.resize(photo.rgb, self.c.image_size)
    lap("resize")
    rgb = small[None]
    if self.c.filters is None:
      self.c.filters = predict.inference_filters(self.c.model, self.c.variables, rgb)
    _, ab = engine.predict_ab(self.c.model, self.c.variables, rgb, self.c.filters)
    ab = np.asarray(ab)
    lap("network")
    h, w = photo.rgb.shape[:2]
    if min(h, w) >= self.c.image_size:
      colour = engine.compose_host(photo.rgb, ab[0])
    else:
      out = engine.compose(engine.pad_to_bucket(photo.rgb), ab[0], h, w)
      colour = np.asarray(out)[:h, :w]
    lap("compose")
    encode_jpeg(colour)
    lap("encode")
    self.last = (photo.rgb, np.asarray(ab[0]), colour)
    return times


def littlecms_compose(rgb, ab_net) -> np.ndarray:
  """The compose stage with Pillow only: 8-bit Lab (L from LittleCMS, ab upsampled by Pillow's
  8-bit bilinear resize), LittleCMS Lab -> sRGB. The reference's own uint8 Lab path."""
  h, w = rgb.shape[:2]
  srgb, lab = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB")
  to_lab = ImageCms.buildTransform(srgb, lab, "RGB", "LAB")
  to_rgb = ImageCms.buildTransform(lab, srgb, "LAB", "RGB")
  lightness = ImageCms.applyTransform(Image.fromarray(rgb), to_lab).getchannel("L")
  ab8 = np.clip(np.round(ab_net * 255.0), 0, 255).astype(np.uint8)
  a, b = (Image.fromarray(ab8[..., i]).resize((w, h), Image.BILINEAR) for i in range(2))
  return np.asarray(ImageCms.applyTransform(Image.merge("LAB", (lightness, a, b)), to_rgb))


def xla_compose(rgb, ab_net) -> np.ndarray:
  """The compose stage in XLA (engine.compose on the bucket-padded photo)."""
  h, w = rgb.shape[:2]
  return np.asarray(engine.compose(engine.pad_to_bucket(rgb), ab_net, h, w))[:h, :w]


def median_times(fn, repeats: int) -> dict:
  fn()  # warm
  runs = [fn() for _ in range(repeats)]
  return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}


def timed(fn, repeats: int) -> float:
  fn()
  return common.median([common.time_once(fn) for _ in range(repeats)])


def network_contenders(ckpt, variables, config, l3: np.ndarray, repeats: int, folder: str):
  """Seconds per batch-1 network call in JAX ('xla' convs), TF/Keras, ONNX Runtime, TFLite."""
  # The contenders' libraries only when they run (--skip_contenders skips them).
  import keras_reference
  import onnx
  import tensorflow as tf

  out, ab = {}, {}
  size = config.model.image_size
  fn = exporter.network_fn(
    networks.models_from_config(config.model, exporter.EXPORT_CONV)[0], variables
  )
  net_l = np.ascontiguousarray(l3[..., :1])
  xla = jax.jit(fn)
  out["jax_xla_convs"] = timed(lambda: jax.block_until_ready(xla(net_l)), repeats)
  ab["jax_xla_convs"] = np.asarray(xla(net_l))

  keras_model = keras_reference.build_keras_generator(
    size, config.model.width, config.model.num_classes, config.model.fc_width
  )
  full, _ = checkpoint.load_generator(ckpt)  # Keras builds the whole generator
  keras_reference.flax_to_keras(jax.device_get(full), keras_model)
  keras_fn = tf.function(lambda x: keras_model(x, training=False)[0], jit_compile=False)
  x3 = tf.constant(l3)
  out["tf_keras"] = timed(lambda: keras_fn(x3).numpy(), repeats)
  ab["tf_keras"] = keras_fn(x3).numpy()

  onnx_path = os.path.join(folder, "generator.onnx")
  onnx.save(exporter.to_onnx(fn, size), onnx_path)
  threads = os.cpu_count()
  run_onnx = common.onnx_runner(onnx_path, threads)
  out["onnxruntime"] = timed(lambda: run_onnx(net_l), repeats)
  ab["onnxruntime"] = run_onnx(net_l)

  if problem := exporter.tf_formats_problem():
    print(f"TFLite not timed: {problem}", file=sys.stderr)
    return out, ab
  run_tflite = common.tflite_runner(exporter.to_tflite(fn, size), threads, len(net_l))
  out["tflite"] = timed(lambda: run_tflite(net_l), repeats)
  ab["tflite"] = run_tflite(net_l)

  # Reduced precision: TFLite's dynamic-range int8 weights (activations stay float).
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
    [exporter.to_tf_function(fn, size).get_concrete_function()]
  )
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  run_tflite = common.tflite_runner(converter.convert(), threads, len(net_l))
  out["tflite_int8_weights"] = timed(lambda: run_tflite(net_l), repeats)
  ab["tflite_int8_weights"] = run_tflite(net_l)
  return out, ab


# --------------------------------------------------------------------------------------------
# Folders: colorize.py on a whole folder, before / after / the network alone.

# Run as `python -c` in a fresh process with the code root first on sys.path: times
# colorize.main from the colorizer's creation (after the checkpoint load) and one untimed
# network call on black photos (the compile-cache load and the Winograd filter transform, once
# per run whatever the folder: "setup_s") to the end: the folder's steady rate.
_FOLDER_CHILD = """
import json, os, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from chromagan_jax import colorize
from chromagan_jax.inference import engine
marks = {{}}
init = engine.Colorizer.__init__
def timed_init(self, *args, **kwargs):
  init(self, *args, **kwargs)
  t0 = time.perf_counter()
  black = np.zeros((self.image_size, self.image_size, 3), np.uint8)
  np.asarray(self.predict_network([black])[1])
  marks["setup_s"] = time.perf_counter() - t0
  marks.setdefault("ready", (time.perf_counter(), os.times()))
engine.Colorizer.__init__ = timed_init
messages = []
status = colorize.main({argv!r}, log=messages.append)
end, t_end = time.perf_counter(), os.times()
start, t_start = marks["ready"]
with open("/proc/self/status") as f:
  hwm = [int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")][0]
cpu = (t_end.user + t_end.system) - (t_start.user + t_start.system)
print(json.dumps({{"status": status, "wall_s": end - start, "cpu_s": cpu, "peak_rss_mib": hwm,
                  "setup_s": marks["setup_s"], "messages": messages[-1:]}}))
"""


def folder_child_run(root: str, argv: list[str]) -> dict:
  out = subprocess.run(
    [sys.executable, "-c", _FOLDER_CHILD.format(root=root, argv=argv)],
    capture_output=True,
    text=True,
    cwd=root,
  )
  if out.returncode:
    raise RuntimeError(f"colorize child failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def network_child(ckpt: str, folder: str, batch_size: int) -> dict:
  """The network calls alone for ``folder``'s photos: their batches through predict_network
  (decoded beforehand, untimed), after one untimed call; seconds summed over the batches."""
  paths = images.find(folder)
  variables, config = checkpoint.load_generator(ckpt, with_class_head=False)
  size = min(batch_size, len(paths))
  colorizer = engine.Colorizer(variables, config, batch_size=size)
  batches = [paths[i : i + size] for i in range(0, len(paths), size)]
  rgbs = [images.read(p).rgb for p in batches[0]]
  np.asarray(colorizer.predict_network(rgbs)[1])  # compile (or cache load) + filters
  total = cpu = 0.0
  for batch in batches:
    rgbs = []
    for p in batch:
      try:
        rgbs.append(images.read(p).rgb)
      except images.ImageError:
        pass
    if rgbs:
      cpu_start = time.process_time()
      total += common.time_once(lambda rgbs=rgbs: np.asarray(colorizer.predict_network(rgbs)[1]))
      cpu += time.process_time() - cpu_start
  return {"network_s": total, "network_cpu_s": cpu, "calls": len(batches), "batch_size": size}


def folder_megapixels(folder: str) -> tuple[int, float]:
  """(image files, megapixels) of ``folder``, from the headers."""
  paths, mp = images.find(folder), 0.0
  for p in paths:
    try:
      with Image.open(p) as im:
        mp += im.size[0] * im.size[1] / 1e6
    except OSError:
      pass
  return len(paths), mp


def measure_folder(args, tmp: str) -> None:
  """--folder / --synthetic: before, after and the network alone, interleaved (module doc)."""
  folder = args.folder
  if not folder:
    folder = os.path.join(tmp, "photos")
    os.makedirs(folder)
    w, h = (int(round(x * np.sqrt(args.synthetic_mp / 12.0))) for x in PHOTO_SIZES["12"])
    for i in range(args.synthetic):
      os.replace(make_photo(folder, (w, h), seed=i), os.path.join(folder, f"{i:03d}.jpg"))
  ckpt = args.ckpt or common.random_checkpoint(tmp)
  count_, mp = folder_megapixels(folder)
  cache = os.path.join(tmp, "xla_cache")
  before_root = args.before_root or common.ROOT
  before_flags = [] if args.before_root else ["--workers", "0"]

  def argv(out, flags):
    return [folder, "--ckpt", ckpt, "--output", os.path.join(tmp, out), "--no_progress",
            "--batch_size", str(args.batch_size), "--compilation_cache", cache, *flags]  # fmt: skip

  # Warm the compilation cache (the network at this batch shape, compose buckets).
  folder_child_run(common.ROOT, argv("warm", ["--workers", str(args.workers)]))
  result = {
    "machine": common.machine_info(),
    "folder": args.folder or f"{args.synthetic} synthetic {args.synthetic_mp} MP JPEGs",
    "photos": count_,
    "megapixels": mp,
    "batch_size": args.batch_size,
    "workers": args.workers,
    "before": args.before_root or "this tree, --workers 0",
    "runs": [],
  }
  rows = []
  for r in range(args.rounds):
    net = subprocess.run(
      [sys.executable, __file__, "--_network_child", folder, "--ckpt", ckpt,
       "--batch_size", str(args.batch_size)],
      capture_output=True, text=True, check=True,
      env={**os.environ, "JAX_COMPILATION_CACHE_DIR": cache},
    )  # fmt: skip
    network = json.loads(net.stdout.strip().splitlines()[-1])
    for name, root, flags in (
      ("before", before_root, before_flags),
      ("after", common.ROOT, ["--workers", str(args.workers)]),
    ):
      out = f"out_{name}_{r}"
      run = folder_child_run(root, argv(out, flags))
      shutil.rmtree(os.path.join(tmp, out), ignore_errors=True)
      row = {
        "round": r,
        "code": name,
        "photos_per_s": count_ / run["wall_s"],
        "mp_per_s": mp / run["wall_s"],
        "cores_busy": run["cpu_s"] / run["wall_s"],
        "wall_s": run["wall_s"],
        "network_s": network["network_s"],
        "wall_over_network": run["wall_s"] / network["network_s"],
        "peak_rss_mib": run["peak_rss_mib"],
        "setup_s": run["setup_s"],
      }
      rows.append(row)
      result["runs"].append({**row, "child": run, "network": network})
      print(json.dumps(row), flush=True)
  result["machine"]["load_average_1_5_15_at_end"] = list(os.getloadavg())
  common.write_json(args.output, result)
  columns = ["round", "code", "photos_per_s", "mp_per_s", "cores_busy", "wall_s", "network_s",
             "wall_over_network", "peak_rss_mib", "setup_s"]  # fmt: skip
  print(f"{count_} photos, {mp:.0f} MP; {result['machine']['cpu']}, {result['machine']['isa']}")
  common.print_table(rows, columns, markdown=args.markdown)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--ckpt", default=None, help="default: random paper-size weights")
  parser.add_argument("--sizes", default="0.3,2,12", help="megapixels, of " + ",".join(PHOTO_SIZES))
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--skip_contenders", action="store_true", help="JAX path only")
  parser.add_argument("--skip_loading", action="store_true")
  parser.add_argument(
    "--output",
    default=None,
    help="default bench/results/colorize_e2e.json (colorize_folder.json with --folder, "
    "--synthetic)",
  )
  parser.add_argument("--markdown", action="store_true")
  parser.add_argument("--folder", default=None, help="time colorize.py on this folder instead")
  parser.add_argument(
    "--synthetic", type=int, default=0, help="time colorize.py on N synthetic photos instead"
  )
  parser.add_argument("--synthetic_mp", type=float, default=12.0)
  parser.add_argument("--before_root", default=None, help="checkout of the code to compare with")
  parser.add_argument("--workers", type=int, default=2, help="colorize.py --workers (after)")
  parser.add_argument("--batch_size", type=int, default=engine.DEFAULT_BATCH_SIZE)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--_network_child", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--_load_child", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--_photo", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  name = "colorize_folder.json" if args.folder or args.synthetic else "colorize_e2e.json"
  args.output = args.output or os.path.join(common.ROOT, "bench/results", name)
  if args._load_child:
    print(json.dumps(load_child(args._load_child, args.ckpt, args._photo)))
    return
  if args._network_child:
    print(json.dumps(network_child(args.ckpt, args._network_child, args.batch_size)))
    return
  # The photos, the random checkpoint and the exported models (~800 MB at the paper's size)
  # live in a temporary folder, removed however the run ends.
  folder = tempfile.mkdtemp(prefix="bench_colorize_")
  try:
    if args.folder or args.synthetic:
      measure_folder(args, folder)
    else:
      measure(args, folder)
  finally:
    shutil.rmtree(folder, ignore_errors=True)


def measure(args, folder: str) -> None:
  """The benchmark proper (see the module docstring); its files go to ``folder``."""
  result = {
    "machine": common.machine_info(),
    "ckpt": args.ckpt or "random paper-size weights",
    "repeats": args.repeats,
  }
  args.ckpt = args.ckpt or common.random_checkpoint(folder)
  photos = {mp: make_photo(folder, PHOTO_SIZES[mp]) for mp in args.sizes.split(",")}

  variables, config = checkpoint.load_generator(args.ckpt, with_class_head=False)
  # The checkpoint's conv_impl ("auto" when it names none) on this machine, as colorize.py.
  colorizer = engine.Colorizer(variables, config, batch_size=1)
  result["network_conv_impl"] = colorizer.model.conv.impl  # As resolved: "winograd" for "auto".

  def end_to_end(path):  # Colorizer.stream + encode, as colorize.py runs it.
    return timed(lambda: encode_jpeg(next(colorizer.stream([images.read(path)]))[1]), args.repeats)

  # First with glibc's default allocator settings, then as colorize.py runs (keep_freed_memory).
  default_malloc = {mp: end_to_end(path) for mp, path in photos.items()}
  result["keep_freed_memory"] = allocator.keep_freed_memory()
  pipe = Pipeline(colorizer)
  rows = []
  for mp, path in photos.items():
    stages = median_times(lambda path=path: pipe.run(path), args.repeats)
    rgb, ab_net, colour = pipe.last
    total = sum(stages[s] for s in STAGES)
    pillow_resize = timed(
      lambda rgb=rgb: np.asarray(
        Image.fromarray(rgb).resize((colorizer.image_size,) * 2, Image.BILINEAR)
      ),
      args.repeats,
    )
    xla_compose_s = timed(lambda rgb=rgb, ab=ab_net: xla_compose(rgb, ab), args.repeats)
    xla = xla_compose(rgb, ab_net).astype(int)
    lcms = littlecms_compose(rgb, ab_net)
    lcms_s = timed(lambda rgb=rgb, ab=ab_net: littlecms_compose(rgb, ab), args.repeats)
    diff = np.abs(lcms.astype(int) - colour.astype(int))
    row = {
      "photo_mp": float(mp),
      "size": f"{rgb.shape[1]}x{rgb.shape[0]}",
      **{f"{s}_s": stages[s] for s in STAGES},
      "sum_of_stages_s": total,
      "end_to_end_s": end_to_end(path),
      "end_to_end_default_malloc_s": default_malloc[mp],
      **{f"{s}_share": stages[s] / total for s in STAGES},
      "pillow_resize_s": pillow_resize,
      "xla_compose_s": xla_compose_s,
      "xla_compose_vs_ours_max_abs": int(np.abs(xla - colour.astype(int)).max()),
      "littlecms_compose_s": lcms_s,
      "littlecms_vs_ours_max_abs": int(diff.max()),
      "littlecms_vs_ours_mean_abs": float(diff.mean()),
    }
    rows.append(row)
    print(json.dumps(row), flush=True)
  result["photos"] = rows

  if not args.skip_contenders:
    small = images.resize(pipe.last[0], config.model.image_size)
    l3 = np.asarray(color.gray_to_l3(color.rgb_to_net(small[None])[0]))
    net, ab = network_contenders(args.ckpt, variables, config, l3, args.repeats, folder)
    net["jax_auto (colorize)"] = float(np.median([r["network_s"] for r in rows]))
    _, ours = engine.predict_ab(
      colorizer.model, colorizer.variables, small[None], colorizer.filters
    )
    ours = np.asarray(ours)
    result["network"] = {
      "seconds": net,
      "max_abs_ab_vs_colorize": {k: float(np.abs(v - ours).max()) for k, v in ab.items()},
    }
    print(json.dumps(result["network"], indent=1), flush=True)
  # After the in-process runs: per-machine conv choices (conv_choice) are on disk by then, so
  # both variants' first photo costs the same compile work but for the class head.
  if not args.skip_loading:
    result["loading"] = measure_loading(args.ckpt, photos[min(photos, key=float)])
    print(json.dumps(result["loading"], indent=1), flush=True)
  result["machine"]["load_average_1_5_15_at_end"] = list(os.getloadavg())
  common.write_json(args.output, result)
  columns = [
    "photo_mp",
    "size",
    *[f"{s}_s" for s in STAGES],
    "sum_of_stages_s",
    "end_to_end_s",
    "end_to_end_default_malloc_s",
  ]
  common.print_table(rows, columns, markdown=args.markdown)


if __name__ == "__main__":
  main()
