"""Colorize a photo at full resolution with the exported ONNX model: onnxruntime, NumPy, Pillow.

  python -m chromagan_jax.export --ckpt CKPT --format onnx --output chromagan.onnx
  python docs/colorize_onnx.py chromagan.onnx photo.jpg colorized.jpg

The same steps as ``colorize.py`` (the reference's inference), without JAX:
  1. decode, apply EXIF orientation; L of the photo (sRGB -> CIE Lab, D65) at full resolution;
  2. resize the photo to the model's S x S (bilinear), its L / 100 is the network input
     ``L`` (1, S, S, 1) in [0, 1];
  3. the network gives ``ab`` (1, S, S, 2) in [0, 1]; ``ab8 = clip(255 ab, 0, 255)`` is
     resized (bilinear) to the photo's size, ``a = ab8[..., 0] - 128``, ``b = ab8[..., 1] - 128``;
  4. full-resolution L with the upsampled a, b -> sRGB, saved.
Pillow's bilinear resize filters when shrinking; colorize.py resizes the network input
without filtering, as training did (cv2.resize INTER_LINEAR): colours differ slightly.
"""

import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

# sRGB (linear) <-> XYZ (D65) and the D65 white, as in chromagan_jax/ops/color.py.
RGB_TO_XYZ = np.array(
  [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ).astype(np.float32)
WHITE = np.array([0.95047, 1.0, 1.08883], np.float32)
DELTA = 6.0 / 29.0


def srgb_to_lightness(rgb: np.ndarray) -> np.ndarray:
  """uint8 sRGB (H, W, 3) -> Lab L (H, W) in [0, 100], float32."""
  c = rgb.astype(np.float32) / 255.0
  lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
  y = lin @ RGB_TO_XYZ[1].astype(np.float32)  # Y / Y_white, Y_white = 1
  f = np.where(y > DELTA**3, np.cbrt(y), y / (3 * DELTA**2) + 4.0 / 29.0)
  return 116.0 * f - 16.0


def lab_to_srgb(lightness: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Lab (three (H, W) arrays) -> uint8 sRGB (H, W, 3), out-of-gamut clipped in linear RGB."""
  fy = (lightness + 16.0) / 116.0
  f = np.stack([fy + a / 500.0, fy, fy - b / 200.0], axis=-1)
  xyz = np.where(f > DELTA, f**3, 3 * DELTA**2 * (f - 4.0 / 29.0)) * WHITE
  lin = np.clip(xyz @ XYZ_TO_RGB.T, 0.0, 1.0)
  srgb = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
  return np.clip(np.round(srgb * 255.0), 0, 255).astype(np.uint8)


def colorize(session: ort.InferenceSession, photo: Image.Image) -> Image.Image:
  size = session.get_inputs()[0].shape[1]  # S; the batch dimension is dynamic
  rgb = np.asarray(ImageOps.exif_transpose(photo).convert("RGB"))
  height, width = rgb.shape[:2]
  small = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
  net_l = (srgb_to_lightness(small) / 100.0)[None, :, :, None].astype(np.float32)
  (ab,) = session.run(["ab"], {"L": net_l})
  ab8 = np.clip(ab[0] * 255.0, 0.0, 255.0)
  a, b = (
    np.asarray(Image.fromarray(ab8[..., i]).resize((width, height), Image.BILINEAR)) - 128.0
    for i in range(2)
  )
  return Image.fromarray(lab_to_srgb(srgb_to_lightness(rgb), a, b))


def main(model_path: str, photo_path: str, output_path: str) -> None:
  session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
  with Image.open(photo_path) as photo:
    result = colorize(session, photo)
  result.save(output_path, quality=95, subsampling=0)  # JPEG options; ignored by PNG
  print(f"wrote {output_path} ({result.width}x{result.height})")


if __name__ == "__main__":
  if len(sys.argv) != 4:
    sys.exit("usage: python docs/colorize_onnx.py MODEL.onnx PHOTO OUTPUT")
  main(*sys.argv[1:])
