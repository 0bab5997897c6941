"""The int8 OpenVINO network stage against JAX float32 on one checkpoint: accuracy and speed.

  python -m chromagan_jax.export --ckpt /work/small --step 2500 --format openvino-int8 \
    --calib /work/split/train --output /tmp/small_int8
  python bench/openvino_int8.py --ckpt /work/small --step 2500 --network /tmp/small_int8 \
    --photos /work/split/val

Accuracy: every photo of --photos colorized at full resolution both ways (engine.Colorizer,
JAX's default convolutions vs --network): mean / max |Δab| in Lab units of the network output
(ab * 255) and of the written pixels (scikit-image Lab), and PSNR against the originals.
Speed: the network stage alone (uint8 RGB at S -> ab), batch 1 and 8, the two contenders
alternated call by call in this one process; median and lower quartile of ms per call.
"""

import argparse
import json
import time

import numpy as np
from skimage import color as skcolor

from chromagan_jax.data import images
from chromagan_jax.evaluation import scores
from chromagan_jax.inference import engine, openvino_network
from chromagan_jax.weights import checkpoint


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--ckpt", required=True)
  p.add_argument("--step", type=int, default=None)
  p.add_argument("--network", required=True)
  p.add_argument("--photos", required=True)
  p.add_argument("--calls", type=int, default=10)
  args = p.parse_args()
  variables, config = checkpoint.load_generator(args.ckpt, args.step, with_class_head=False)
  size = int(config.model.image_size)
  photos = [images.read(path) for path in images.find(args.photos)]
  out = {"image_size": size, "photos": len(photos)}

  def colorizers(batch):
    jax_c = engine.Colorizer(variables, config, batch_size=batch)
    net = openvino_network.load_network(args.network, size, batch)
    return {"jax": jax_c, "ov-int8": engine.Colorizer(variables, config, batch, network=net)}

  cs = colorizers(1)
  ab = {k: np.concatenate([np.asarray(c.predict_network([p.rgb])[1]) for p in photos])
        for k, c in cs.items()}  # fmt: skip
  d = np.abs(ab["ov-int8"] - ab["jax"]) * 255
  out["network_dab_mean"], out["network_dab_max"] = float(d.mean()), float(d.max())
  pixels = {k: [colour[..., :3] for _, colour, _ in c.stream(photos)] for k, c in cs.items()}
  d = np.concatenate([
    np.abs(skcolor.rgb2lab(a)[..., 1:] - skcolor.rgb2lab(b)[..., 1:]).ravel()
    for a, b in zip(pixels["ov-int8"], pixels["jax"], strict=True)
  ])  # fmt: skip
  out["pixels_dab_mean"], out["pixels_dab_max"] = float(d.mean()), float(d.max())
  for k, outs in pixels.items():
    values = [
      float(scores.psnr(o[None], p.rgb[None])[0]) for o, p in zip(outs, photos, strict=True)
    ]
    out[f"psnr_{k}"] = float(np.mean(values))
  for batch in (1, 8):
    cs = colorizers(batch)
    x = np.stack([images.resize(photos[i % len(photos)].rgb, size) for i in range(batch)])
    runs = {k: (lambda c=c, x=x: np.asarray(c.network(x)[1])) for k, c in cs.items()}
    for run in runs.values():
      run(), run()  # Compile, warm up.
    times = {k: [] for k in runs}
    for _ in range(args.calls):
      for k, run in runs.items():
        t = time.perf_counter()
        run()
        times[k].append(time.perf_counter() - t)
    for k, t in times.items():
      out[f"ms_b{batch}_{k}"] = [round(1e3 * np.median(t), 1), round(1e3 * np.percentile(t, 25), 1)]
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
