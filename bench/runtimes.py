"""Times the network stage in every CPU runtime a user would pick, one fresh process each.

  python bench/runtimes.py --calib /work/split/train --photos /work/split/val --rounds 5
  python bench/runtimes.py --ckpt DIR --calib ... --photos ... --batch_sizes 1,8 --markdown

The network stage is what ``Colorizer.predict_network`` runs: uint8 RGB at S x S (224 for the
paper's generator) -> L -> the head-free generator -> ab. The JAX contenders run exactly that
(its host-side resize is an identity at S x S); the others run the exported network
(chromagan_jax.inference.exporter: ``L`` / 100 -> ``ab``) on the L of the same photos
(untimed for them: a few elementwise operations).

Contenders (``--contenders`` picks some; one missing its package is skipped with one line):
  jax-auto     chromagan-jax's default: conv_impl "auto" (Winograd by the per-ISA rule)
  jax-xla      conv_impl "xla" (XLA's own convolutions); the accuracy reference
  ort-fp32     ONNX Runtime on the jax2onnx export
  ort-int8     ONNX Runtime on its static-quantized QDQ model (quantize_static: uint8
               activations, int8 per-channel weights, MinMax calibration)
  ov-fp32      OpenVINO (the ONNX export converted, inference precision hint f32)
  ov-int8      OpenVINO on NNCF's post-training int8 model (nncf.quantize, default preset)
  tflite-fp32  TFLite (XNNPACK) on the jax2tf export
  tflite-int8  TFLite integer quantization from a representative dataset: int8 builtins only
               (float input/output), or with float fallback where that fails (the JSON says)
Every runtime gets ``--threads`` (default: the machine's cores); XLA's CPU pool is its cores.

Calibration uses the first 32 photos of ``--calib`` sorted by path; accuracy, the first 12 of
``--photos``: mean and max |delta ab| in Lab units against jax-xla (without them, the photos
bundled with scikit-image: its 'train' ones calibrate, its 'holdout' ones measure accuracy).
Exported models are built once per run by child processes in a temporary folder; then each
round runs every contender once in its own process, in an order rotated by one per round; each
child warms up (``common.WARMUP_S``) and times ``--calls`` calls per batch size. Reported per
contender and batch size, over all rounds: median and lower quartile of ms per call, both over
jax-auto's, and the child's peak RSS (VmHWM).
"""

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common  # noqa: I001 (sets sys.path and TF env before the imports below)
import numpy as np

from chromagan_jax.data import images, sources

# chromagan_jax.inference (and JAX with it) is imported where used: the processes of the other
# runtimes never import it, so that their peak RSS is their own.

CONTENDERS = ("jax-auto", "jax-xla", "ort-fp32", "ort-int8", "ov-fp32", "ov-int8",
              "tflite-fp32", "tflite-int8")  # fmt: skip
REFERENCE, BASELINE = "jax-xla", "jax-auto"
# The exported model files each contender runs, and the export step that writes them.
SUFFIXES = {"ort": ".onnx", "ov": ".xml", "tflite": ".tflite"}
MODEL_FILES = {n: n.split("-")[1] + SUFFIXES[n.split("-")[0]] for n in CONTENDERS if n[:3] != "jax"}
# In this order: OpenVINO converts the ONNX export.
EXPORTS = {
  "onnx": ("ort-fp32", "ort-int8", "ov-fp32", "ov-int8"),
  "openvino": ("ov-fp32", "ov-int8"),
  "tflite": ("tflite-fp32", "tflite-int8"),
}
PACKAGES = ("jax", "jaxlib", "flax", "onnx", "jax2onnx", "onnxruntime", "openvino", "nncf",
            "tensorflow-cpu", "tensorflow", "numpy")  # fmt: skip
CALIB_PHOTOS, ACCURACY_PHOTOS = 32, 12
# Lab units per unit of the network's ab encoding (a = 255 * ab - 128).
LAB_PER_AB = 255.0


def missing(name: str) -> str | None:
  """Why contender ``name`` cannot run with the installed packages, or None when it can."""
  need = {"ort": ("onnx", "jax2onnx", "onnxruntime"), "ov": ("onnx", "jax2onnx", "openvino")}
  need = need.get(name.split("-")[0], ()) + (("nncf",) if name == "ov-int8" else ())
  if name.startswith("tflite"):
    from chromagan_jax.inference import exporter

    need = ("tensorflow",)
    if problem := exporter.tf_formats_problem():
      return problem
  absent = [m for m in need if importlib.util.find_spec(m) is None]
  return f"not installed: {', '.join(absent)}" if absent else None


def versions() -> dict:
  """The installed versions of :data:`PACKAGES` (those installed)."""
  found = {
    d.metadata["Name"].lower().replace("_", "-"): d.version
    for d in importlib.metadata.distributions()
  }
  return {p: found[p] for p in PACKAGES if p in found}


def read_photos(folder: str | None, count: int, size: int, bundled: str) -> tuple[np.ndarray, list]:
  """uint8 RGB (n, size, size, 3) of the first ``count`` photos of ``folder`` sorted by path
  (resized as the network input is), or of scikit-image's ``bundled`` split; and their paths."""
  paths = (images.find(folder) if folder else sources.bundled_photos(bundled))[:count]
  return np.stack([images.resize(images.read(p).rgb, size) for p in paths]), paths


def net_lightness(rgb: np.ndarray) -> np.ndarray:
  """The exported network's input for uint8 RGB (n, S, S, 3): float32 L / 100, (n, S, S, 1)."""
  from chromagan_jax.ops import color

  return np.asarray(color.rgb_to_net(rgb)[0], np.float32)


# --------------------------------------------------------------------------------------------
# Exports: one child process per format, writing MODEL_FILES into the run's folder.


def export_onnx(fn, size: int, folder: str, calib: np.ndarray, quantize: bool) -> dict:
  """fp32.onnx (ort-fp32, and ov-* converts it), and int8.onnx when ``quantize``."""
  import onnx

  from chromagan_jax.inference import exporter

  fp32 = os.path.join(folder, MODEL_FILES["ort-fp32"])
  onnx.save(exporter.to_onnx(fn, size), fp32)
  if not quantize:
    return {}
  from onnxruntime import quantization as q

  class Reader(q.CalibrationDataReader):  # With CalibStridedMinMax: a few photos at a time.
    def __init__(self):
      self.set_range(0, len(calib))

    def __len__(self):
      return len(calib)

    def set_range(self, start_index, end_index):
      self.items = iter(calib[i : i + 1] for i in range(start_index, end_index))

    def get_next(self):
      return next(({exporter.INPUT_NAME: x} for x in self.items), None)

  # Shape inference and graph clean-up first, as ONNX Runtime's quantization guide asks.
  prepared = os.path.join(folder, "prepared.onnx")
  q.quant_pre_process(fp32, prepared)
  q.quantize_static(
    prepared, os.path.join(folder, MODEL_FILES["ort-int8"]), Reader(),
    quant_format=q.QuantFormat.QDQ, per_channel=True, activation_type=q.QuantType.QUInt8,
    weight_type=q.QuantType.QInt8, calibrate_method=q.CalibrationMethod.MinMax,
    # Ranges merged every few photos (a divisor of their count): all activations of 32 photos
    # at the paper's size take GBs.
    extra_options={"CalibStridedMinMax": math.gcd(len(calib), 4)},
  )  # fmt: skip
  return {"ort-int8": "quantize_static QDQ, uint8 activations, int8 per-channel weights, MinMax"}


def export_openvino(folder: str, calib: np.ndarray) -> dict:
  import nncf
  import openvino as ov

  model = ov.convert_model(os.path.join(folder, MODEL_FILES["ort-fp32"]))
  ov.save_model(model, os.path.join(folder, MODEL_FILES["ov-fp32"]), compress_to_fp16=False)
  dataset = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
  quantized = nncf.quantize(model, dataset, subset_size=len(calib))
  ov.save_model(quantized, os.path.join(folder, MODEL_FILES["ov-int8"]), compress_to_fp16=False)
  return {"ov-int8": "nncf.quantize (post-training, default preset), "
          f"{len(calib)} calibration photos"}  # fmt: skip


def export_tflite(fn, size: int, folder: str, calib: np.ndarray) -> dict:
  import tensorflow as tf

  from chromagan_jax.inference import exporter

  with open(os.path.join(folder, MODEL_FILES["tflite-fp32"]), "wb") as f:
    f.write(exporter.to_tflite(fn, size))

  def converter(int8_only: bool):
    c = tf.lite.TFLiteConverter.from_concrete_functions(
      [exporter.to_tf_function(fn, size).get_concrete_function()]
    )
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
    if int8_only:
      c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return c

  try:
    model, mode = converter(True).convert(), "full integer (int8 builtins only, float I/O)"
  except Exception as e:  # The converter raises ConverterError and others; any means "cannot".
    print(f"tflite-int8: int8-only conversion failed ({str(e)[:300]}); float fallback")
    model, mode = converter(False).convert(), "integer with float fallback"
  with open(os.path.join(folder, MODEL_FILES["tflite-int8"]), "wb") as f:
    f.write(model)
  return {"tflite-int8": f"{mode}, representative dataset of {len(calib)} photos"}


def export_child(fmt: str, ckpt: str, step: int, folder: str, names: list[str]) -> dict:
  """Writes format ``fmt``'s model files for ``names``; returns how each int8 model was made."""
  calib = np.load(os.path.join(folder, "calib_L.npy"))
  if fmt == "openvino":
    return export_openvino(folder, calib)
  from chromagan_jax.inference import exporter

  fn, size = exporter.load(ckpt, step)
  if fmt == "onnx":
    return export_onnx(fn, size, folder, calib, quantize="ort-int8" in names)
  return export_tflite(fn, size, folder, calib)


# --------------------------------------------------------------------------------------------
# One contender in its own process.


def runner(name: str, ckpt: str, step: int, folder: str, batch: int, threads: int):
  """Contender ``name`` at ``batch``: a function of the batch's uint8 RGB (batch, S, S, 3) for
  JAX, of its L (:func:`net_lightness`) for the others, to ab (batch, S, S, 2) as NumPy."""
  if name.startswith("jax"):
    from chromagan_jax.inference import engine
    from chromagan_jax.weights import checkpoint

    variables, config = checkpoint.load_generator(ckpt, step, with_class_head=False)
    impl = "xla" if name == "jax-xla" else "auto"
    colorizer = engine.Colorizer(variables, config, batch_size=batch, conv_impl=impl)
    return lambda rgb: np.asarray(colorizer.predict_network(list(rgb))[1])
  path = os.path.join(folder, MODEL_FILES[name])
  if name.startswith("ort"):
    return common.onnx_runner(path, threads)
  if name.startswith("tflite"):
    with open(path, "rb") as f:
      return common.tflite_runner(f.read(), threads, batch)
  import openvino as ov

  model = ov.Core().read_model(path)
  model.reshape([batch, *(d.get_length() for d in list(model.inputs[0].partial_shape)[1:])])
  compiled = ov.Core().compile_model(model, "CPU", {
    "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
    "INFERENCE_PRECISION_HINT": "f32",  # Not bf16, which the CPU plugin may pick by itself.
  })  # fmt: skip
  request = compiled.create_infer_request()
  return lambda lightness: request.infer([lightness])[0].copy()


def contender_child(args) -> dict:
  """Times ``args._child`` at each batch size; in round 0 also writes its ab of the accuracy
  photos (batch 1, one call each) as ab_<name>.npy."""
  inputs = "photos_rgb.npy" if args._child.startswith("jax") else "photos_L.npy"
  photos = np.load(os.path.join(args._dir, inputs))
  out = {"times_s": {}}
  for batch in args.batch_sizes:
    run = runner(args._child, args.ckpt, args.step, args._dir, batch, args.threads)
    x = np.resize(photos, (batch, *photos.shape[1:]))  # The first photos, repeated if too few.
    out["times_s"][batch] = common.interleaved(
      {"call": lambda run=run, x=x: run(x)}, args.calls, 0, common.warmup_s(args.smoke)
    )["call"]
    if batch == 1 and args._accuracy:
      ab = np.concatenate([run(photos[i : i + 1]) for i in range(len(photos))])
      np.save(os.path.join(args._dir, f"ab_{args._child}.npy"), ab)
  out["peak_rss_mib"] = common.vm_hwm_mib()
  return out


def child(shared: list[str], *flags: str) -> dict:
  """Runs ``python bench/runtimes.py SHARED FLAGS`` and returns the JSON of its last line."""
  argv = [sys.executable, __file__, *shared, *flags]
  done = subprocess.run(argv, capture_output=True, text=True)
  if done.returncode:
    raise RuntimeError(f"{' '.join(flags)} failed:\n{done.stderr[-4000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# The parent: exports, rounds, the table.


def default_json(args, cpu: dict) -> str:
  """bench/results/runtimes_<cpu>-<isa>_<date>_[<what>_]<weights>_b<batch sizes>.json."""
  model = cpu["cpu"].lower()
  for word in ("amd", "intel(r)", "intel", "(r)", "(tm)", "processor", "cpu"):
    model = model.replace(word, " ")
  tag = "-".join([*model.split("@")[0].split(), cpu["isa"]])
  weights = "ckpt" if args.ckpt else "smoke" if args.smoke else "random"
  what = [args.what] if args.what else []
  name = "_".join(["runtimes", tag, time.strftime("%Y-%m-%d"), *what, weights])
  batches = "-".join(map(str, args.batch_sizes))
  return os.path.join(common.ROOT, "bench", "results", f"{name}_b{batches}.json")


def summarize(runs: list[dict], names: list[str], batches: list[int], folder: str) -> list[dict]:
  """One row per (contender, batch): median and lower quartile over every timed call."""
  reference = np.load(os.path.join(folder, f"ab_{REFERENCE}.npy"))
  rows = []
  for batch in batches:
    calls = {
      n: [t for r in runs if r["name"] == n for t in r["times_s"][str(batch)]] for n in names
    }
    base = calls.get(BASELINE)
    for name in names:
      t = np.asarray(calls[name]) * 1e3
      row = {"contender": name, "batch": batch, "median_ms": float(np.median(t)),
             "p25_ms": float(np.percentile(t, 25)), "calls": len(t),
             "peak_rss_mib": max(r["peak_rss_mib"] for r in runs if r["name"] == name)}  # fmt: skip
      if base:
        row["median_vs_jax_auto"] = row["median_ms"] / (np.median(base) * 1e3)
        row["p25_vs_jax_auto"] = row["p25_ms"] / (np.percentile(base, 25) * 1e3)
      if batch == min(batches):
        diff = np.abs(np.load(os.path.join(folder, f"ab_{name}.npy")) - reference) * LAB_PER_AB
        row["mean_dab_lab"], row["max_dab_lab"] = float(diff.mean()), float(diff.max())
      rows.append(row)
  return rows


def measure(args, folder: str) -> None:
  names = [REFERENCE, *(n for n in args.contenders if n != REFERENCE)]  # The reference first.
  result = {"machine": common.machine_info(), "versions": versions(), "skipped": {}}
  for name in list(names):
    if name != REFERENCE and (why := missing(name)):
      print(f"{name}: skipped: {why}", flush=True)
      result["skipped"][name] = why
      names.remove(name)
  # --smoke: the paper's network shrunk to 64 x 64, width 1/8.
  ckpt = args.ckpt or common.random_checkpoint(folder, *((64, 0.125) if args.smoke else ()))
  from chromagan_jax.weights import checkpoint

  # One step for every process, though training may write newer ones meanwhile.
  args.step, config = checkpoint.load_config(ckpt, args.step)
  size = int(config.model.image_size)
  calib, calib_names = read_photos(args.calib, CALIB_PHOTOS, size, "train")
  photos, photo_names = read_photos(args.photos, ACCURACY_PHOTOS, size, "holdout")
  np.save(os.path.join(folder, "calib_L.npy"), net_lightness(calib))
  np.save(os.path.join(folder, "photos_rgb.npy"), photos)
  np.save(os.path.join(folder, "photos_L.npy"), net_lightness(photos))
  result.update({
    "ckpt": args.ckpt or "random paper-size weights", "step": args.step, "image_size": size,
    "calibration_photos": calib_names, "accuracy_photos": photo_names, "threads": args.threads,
    "batch_sizes": args.batch_sizes, "calls_per_round": args.calls, "rounds": args.rounds,
    "quantization": {},
  })  # fmt: skip
  shared = ["--ckpt", ckpt, "--step", str(args.step), "--_dir", folder, "--contenders",
            ",".join(names), "--threads", str(args.threads), "--calls", str(args.calls),
            "--batch_sizes", ",".join(map(str, args.batch_sizes))]  # fmt: skip
  shared += ["--smoke"] if args.smoke else []
  for fmt, produced in EXPORTS.items():
    if any(n in names for n in produced):
      start = time.perf_counter()
      result["quantization"].update(child(shared, "--_export", fmt))
      print(f"exported {fmt} in {time.perf_counter() - start:.0f} s", flush=True)
  runs = []
  for r in range(args.rounds):
    for name in names[r % len(names) :] + names[: r % len(names)]:
      run = {
        "round": r,
        "name": name,
        **child(shared, "--_child", name, *(["--_accuracy"] if r == 0 else [])),
      }
      runs.append(run)
      medians = {b: f"{np.median(t) * 1e3:.0f}" for b, t in run["times_s"].items()}
      print(f"round {r} {name}: median ms by batch {medians}", flush=True)
  rows = summarize(runs, names, args.batch_sizes, folder)
  result.update({"rows": rows, "runs": runs})
  result["machine"]["load_average_1_5_15_at_end"] = list(os.getloadavg())
  common.write_json(args.json or default_json(args, result["machine"]), result)
  m = result["machine"]
  flags = " ".join(m["int8_bf16_flags"]) or "no VNNI/BF16"
  print(f"\n{m['cpu']}, ISA {m['isa']} ({flags}), {m['cores']} cores, {args.threads} threads; "
        f"{args.rounds} rounds x {args.calls} calls")  # fmt: skip
  columns = ["contender", "batch", "median_ms", "p25_ms", "median_vs_jax_auto", "p25_vs_jax_auto",
             "peak_rss_mib", "mean_dab_lab", "max_dab_lab"]  # fmt: skip
  common.print_table(rows, columns, markdown=args.markdown)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--ckpt", default=None, help="default: random paper-size weights")
  parser.add_argument("--step", type=int, default=None, help="--ckpt's step; default: latest")
  parser.add_argument("--calib", default=None, help="photos to calibrate int8 models on")
  parser.add_argument("--photos", default=None, help="photos to measure accuracy on")
  parser.add_argument("--contenders", default=",".join(CONTENDERS))
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--calls", type=int, default=10, help="timed calls per child and batch")
  parser.add_argument("--batch_sizes", default="1")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--json", default=None, help="default bench/results/runtimes_<cpu>-<isa>_"
                      "<date>_[<what>_]<random|ckpt>_b<batches>.json")  # fmt: skip
  parser.add_argument("--what", default="", help="a word for the default JSON name")
  parser.add_argument("--markdown", action="store_true")
  parser.add_argument("--smoke", action="store_true", help="a tiny model, 1 round, 1 call")
  for hidden in ("--_child", "--_export", "--_dir"):
    parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)
  parser.add_argument("--_accuracy", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.smoke:
    args.rounds, args.calls = 1, 1
  # Batch 1 always: the accuracy photos go through one at a time.
  args.batch_sizes = sorted({1, *(int(b) for b in args.batch_sizes.split(","))})
  args.contenders = args.contenders.split(",")
  if unknown := set(args.contenders) - set(CONTENDERS):
    parser.error(f"unknown contenders {sorted(unknown)}; expected some of {CONTENDERS}")
  if args._export:
    print(json.dumps(export_child(args._export, args.ckpt, args.step, args._dir, args.contenders)))
    return
  if args._child:
    print(json.dumps(contender_child(args)))
    return
  # The photos, the random checkpoint and the exported models live in a temporary folder,
  # removed however the run ends.
  folder = tempfile.mkdtemp(prefix="bench_runtimes_")
  try:
    measure(args, folder)
  finally:
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
  main()
