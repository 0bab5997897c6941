"""The core without its extras: every module imports, and each feature whose extra is missing
stops with the one line naming it (chromagan_jax/extras.py).

The extras' modules are blocked in a fresh interpreter (``sys.modules[name] = None`` makes
``import name`` raise ModuleNotFoundError, as when the package is not installed); the real
install without extras is tests/wheel_test.py.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from chromagan_jax import extras
from chromagan_jax.errors import MissingExtraError, UserError
from chromagan_jax.runtime import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the extras of pyproject.toml bring, by import name.
EXTRA_MODULES = (
  "tensorflow", "tensorflow_datasets", "clu", "tensorboard", "keras",  # train
  "flask", "waitress",  # app
  "av",  # video
  "onnx", "onnx_ir", "onnxruntime", "jax2onnx",  # export
  "skimage",  # demo
  "openvino", "nncf",  # openvino
)  # fmt: skip


def line(feature, extra):
  return f"error: {feature} needs the '{extra}' extra: pip install 'chromagan-jax[{extra}]'"


def test_require_returns_the_module_or_raises_the_one_line(capsys):
  assert extras.require("json", "video", "video") is json
  with pytest.raises(MissingExtraError) as info:
    extras.require("chromagan_no_such_module.sub", "video", "video")
  assert isinstance(info.value, UserError)

  def main(argv):
    extras.require("chromagan_no_such_module", "video", "video")

  assert runner.call(main, []) == 1
  assert capsys.readouterr().err == line("video", "video") + "\n"


def test_a_broken_install_keeps_its_traceback(tmp_path, monkeypatch):
  """Only a module that is not there names the extra; one that fails to import otherwise
  (a broken install) is not hidden behind it."""
  (tmp_path / "chromagan_broken_mod.py").write_text("raise ImportError('libfoo.so: missing')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(ImportError, match="libfoo"):
    extras.require("chromagan_broken_mod", "video", "video")


# Imports every module of the package, then runs each command whose extra is missing, with the
# extras blocked; prints {"leaked": [...], "runs": {name: [status, stderr's last line]}}.
_BLOCKED_RUN = textwrap.dedent(
  """
  import contextlib, importlib, io, json, os, pkgutil, sys
  BLOCKED = {blocked!r}
  for name in BLOCKED:
    sys.modules[name] = None
  import chromagan_jax
  from chromagan_jax.runtime import runner
  for info in pkgutil.walk_packages(chromagan_jax.__path__, "chromagan_jax."):
    importlib.import_module(info.name)
  leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m])
  runs = {{}}
  for name, command, argv in {commands!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
      try:
        status = runner.call(importlib.import_module("chromagan_jax." + command).main, argv)
      except SystemExit as e:  # absl's app.run (train)
        status = e.code
    runs[name] = [status, (err.getvalue().strip().splitlines() or [""])[-1]]
  print(json.dumps({{"leaked": leaked, "runs": runs}}))
  """
)


@pytest.fixture(scope="module")
def blocked(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("extras")
  clip = tmp / "clip.mp4"
  clip.write_bytes(b"\0" * 64)  # Never opened: the extra is checked first.
  photo = tmp / "photo.png"
  photo.write_bytes(b"\0" * 64)  # Likewise.
  missing_ckpt = str(tmp / "no_ckpt")  # Nor is the checkpoint.
  out = str(tmp / "out")
  commands = [
    ("video", "colorize", ["--ckpt", missing_ckpt, "--output", out, str(clip)]),
    ("app", "app", ["--ckpt", missing_ckpt]),
    ("train", "train", ["--config", "configs/tiny.py", "--workdir", str(tmp / "train")]),
    ("demo", "demo", ["--workdir", str(tmp / "demo")]),
    ("tflite", "export", ["--ckpt", missing_ckpt, "--format", "tflite", "--output", out]),
    ("onnx", "export", ["--ckpt", missing_ckpt, "--format", "onnx", "--output", out]),
    ("network", "colorize", ["--ckpt", missing_ckpt, "--output", out, "--network", "x.xml",
                             str(photo)]),
    ("openvino-int8", "export", ["--ckpt", missing_ckpt, "--format", "openvino-int8",
                                 "--calib", str(tmp), "--output", out]),
  ]  # fmt: skip
  script = _BLOCKED_RUN.format(blocked=EXTRA_MODULES, commands=commands)
  proc = subprocess.run(
    [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_module_imports_without_the_extras(blocked):
  assert blocked["leaked"] == []


@pytest.mark.parametrize(
  "name, feature, extra",
  [
    ("video", "video", "video"),
    ("app", "the web app", "app"),
    ("train", "training", "train"),
    ("demo", "the demo", "demo"),
    ("tflite", "TFLite and SavedModel export", "export"),
    ("onnx", "ONNX export", "export"),
    ("network", "colorize --network", "openvino"),
    ("openvino-int8", "OpenVINO export", "openvino"),
  ],
)
def test_a_missing_extra_is_one_line_naming_it(blocked, name, feature, extra):
  assert blocked["runs"][name] == [1, line(feature, extra)]
