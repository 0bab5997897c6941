"""End-to-end test of the web app (chromagan_jax.inference.webapp) in a real headless browser.

The server is the real entry point (``python -m chromagan_jax.app``) on a free 127.0.0.1
port, killed at the end; the browser is Debian's chromium driven through chromedriver by
Selenium (no browser or driver is downloaded at run time). Without chromium the test is
skipped with the reason, except under CI (``CI=true``), where it fails: the Makefile's test
target installs chromium where it can.
"""

import io
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import (
  ab_input_sensitivity,
  colourful_generator_variables,
  random_generator_variables,
  skip_or_fail_under_ci,
  small_config,
)
from PIL import Image
from skimage import color as skcolor

from chromagan_jax.data import images, pipeline
from chromagan_jax.inference import engine
from chromagan_jax.weights import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The screenshot goes to the test's tmp_path; CHROMAGAN_APP_SCREENSHOT=docs/app.png refreshes
# the README's picture (a test run leaves tracked files alone).
SCREENSHOT_ENV = "CHROMAGAN_APP_SCREENSHOT"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)
SERVER_START_S = 180  # import + checkpoint load + first compile on a loaded 2-core machine
RESULT_S = 180  # per wait for results in the page
# L of the downloaded PNG vs the input's on unclipped pixels: uint8 rounding of the colour
# output moves L by < 1 (measured 99th percentile ~0.5).
L_TOLERANCE_P99 = 1.0


def _which(names):
  return next((p for p in map(shutil.which, names) if p), None)


def _browser():
  """(chromium, chromedriver) paths; skip, or fail under CI, when they are missing."""
  chromium, driver = _which(CHROMIUM), _which(DRIVER)
  try:
    import selenium  # noqa: F401
  except ImportError:
    chromium = None
  if chromium and driver:
    return chromium, driver
  message = (
    "web app browser test needs Debian's chromium and chromium-driver (apt-get install "
    "chromium chromium-driver; `make test` does it as root) and selenium"
  )
  skip_or_fail_under_ci(f"{message}; not found")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def generator():
  """(variables, config) of a generator whose ab follows its input, so that the page's
  colours can only match colorize's when the server ran the network on this photo."""
  config = small_config()
  variables = colourful_generator_variables(config)
  sensitivity = ab_input_sensitivity(variables, config)
  assert sensitivity > 0.2, sensitivity  # ab in [0, 1]: > 50 levels of ab8.
  return variables, config


@pytest.fixture(scope="module")
def server(tmp_path_factory, generator):
  variables, config = generator
  ckpt = tmp_path_factory.mktemp("ckpt")
  checkpoint.save_generator(ckpt, variables, config)
  port = _free_port()
  log = tmp_path_factory.mktemp("log") / "server.log"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  with open(log, "w") as out:
    proc = subprocess.Popen(
      [
        sys.executable,
        "-m",
        "chromagan_jax.app",
        "--ckpt",
        str(ckpt),
        "--port",
        str(port),
      ]
      + ["--max_upload_mb", "2"],
      cwd=ROOT,
      env=env,
      stdout=out,
      stderr=subprocess.STDOUT,
    )
  url = f"http://127.0.0.1:{port}/"
  try:
    deadline = time.monotonic() + SERVER_START_S
    while True:
      try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
          break
      except OSError:
        if proc.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError(f"app did not start: {log.read_text()[-2000:]}") from None
        time.sleep(0.5)
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
  chromium, driver_path = _browser()
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service

  downloads = tmp_path_factory.mktemp("downloads")
  # Chromium puts its singleton socket in a fresh $TMPDIR/org.chromium.Chromium.* folder and
  # leaves it behind when the driver quits: pytest's own folder takes it instead of /tmp.
  browser_tmp = tmp_path_factory.mktemp("chromium_tmp")
  options = webdriver.ChromeOptions()
  options.binary_location = chromium
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
    options.add_argument(arg)
  options.add_argument("--window-size=1200,1000")
  options.add_experimental_option(
    "prefs",
    {"download.default_directory": str(downloads), "download.prompt_for_download": False},
  )
  service = Service(driver_path, env={**os.environ, "TMPDIR": str(browser_tmp)})
  driver = webdriver.Chrome(service=service, options=options)
  driver.set_page_load_timeout(60)
  try:
    yield driver, downloads
  finally:
    driver.quit()


def _wait_done(driver, total):
  from selenium.webdriver.support.ui import WebDriverWait

  WebDriverWait(driver, RESULT_S).until(
    lambda d: d.find_element("id", "status").get_attribute("data-done") == str(total)
  )


def _upload(driver, paths):
  driver.find_element("id", "files").send_keys("\n".join(paths))


def _wait_file(folder, name):
  path = folder / name
  deadline = time.monotonic() + 60
  while not path.exists() or any(p.suffix == ".crdownload" for p in folder.iterdir()):
    assert time.monotonic() < deadline, f"{name} not downloaded: {os.listdir(folder)}"
    time.sleep(0.2)
  return path


@pytest.mark.slow  # ~60 s on 2 shared cores: server start, checkpoint, compiles, browser
def test_app_in_headless_chromium(server, browser, generator, tmp_path):
  driver, downloads = browser
  driver.get(server)
  assert "ChromaGAN" in driver.title

  # 1. A real photo (PNG: lossless, so its L can be compared).
  photo = pipeline.bundled_photos("holdout")[0]
  _upload(driver, [photo])
  _wait_done(driver, 1)
  (card,) = driver.find_elements("css selector", ".card.ok")
  link = card.find_element("css selector", "a.download")
  name = link.get_attribute("download")
  assert name == os.path.splitext(os.path.basename(photo))[0] + "_colorized.png"
  link.click()
  got = images.read_rgb(str(_wait_file(downloads, name)))
  want = images.read_rgb(photo)
  assert got.shape == want.shape  # full resolution
  # L where no channel is clipped (the test generator's strong colours leave the gamut on a
  # few percent of the pixels, where clipping moves L).
  unclipped = np.all((got > 0) & (got < 255), axis=-1)
  assert unclipped.mean() > 0.5, unclipped.mean()
  l_diff = np.abs(skcolor.rgb2lab(got)[..., 0] - skcolor.rgb2lab(want)[..., 0])[unclipped]
  assert np.percentile(l_diff, 99) < L_TOLERANCE_P99
  # The colours are colorize's for this photo (the same pipeline: float rounding at most).
  colorized = engine.colorize([want], *generator)[0]
  assert np.abs(got.astype(int) - colorized).max() <= 1

  # 2. Not an image, and an upload over --max_upload_mb: messages on the page.
  bad = tmp_path / "notes.jpg"
  bad.write_text("this is not a photo\n")
  big = tmp_path / "big.png"
  noise = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
  Image.fromarray(noise).save(big)  # ~4 MB of incompressible pixels
  _upload(driver, [str(bad)])
  _wait_done(driver, 2)
  _upload(driver, [str(big)])
  _wait_done(driver, 3)
  errors = [e.text for e in driver.find_elements("css selector", ".card.error")]
  assert len(errors) == 2
  assert any("notes.jpg" in e and "not an image" in e for e in errors), errors
  assert any("larger than the limit of 2 MB" in e for e in errors), errors

  # 3. Four photos at once (uploaded concurrently by the page): all colorized, and the server
  # still serves after the bad files.
  four = [str(tmp_path / f"p{i}.jpg") for i in range(4)]
  for i, path in enumerate(four):
    size = (200 + 40 * i, 150 + 30 * i)
    Image.fromarray(images.read_rgb(photo)).resize(size).save(path, quality=90)
  _upload(driver, four)
  _wait_done(driver, 7)
  names = [e.text for e in driver.find_elements("css selector", ".card.ok .name")]
  assert len(names) == 5
  for i in range(4):
    assert any(f"p{i}_colorized.jpg ({200 + 40 * i} x {150 + 30 * i})" in n for n in names)
  assert "5 colorized, 2 failed" in driver.find_element("id", "status").text
  driver.execute_script("window.scrollTo(0, 0)")
  screenshot = os.environ.get(SCREENSHOT_ENV) or str(tmp_path / "app.png")
  driver.save_screenshot(screenshot)
  assert os.path.getsize(screenshot) > 10_000


def test_server_limits_without_browser(tmp_path):
  """The server's own checks (the page also checks the size before uploading)."""
  from chromagan_jax.inference import engine
  from chromagan_jax.inference import webapp as app_lib

  config = small_config()
  colorizer = engine.Colorizer(random_generator_variables(config), config, batch_size=1)
  client = app_lib.create_app(
    colorizer, max_upload_bytes=10_000, max_pixels=100 * 100
  ).test_client()
  page = client.get("/").get_data(as_text=True)
  assert "LIMIT_BYTES = 10000" in page and "@@" not in page
  big = client.post(
    "/colorize",
    data={"photo": (io.BytesIO(b"\0" * 20_000), "huge.png")},
    headers={"X-File-Name": "huge%20one.png"},
  )
  assert big.status_code == 413 and big.json["error"].startswith("huge one.png: larger than")
  buf = io.BytesIO()
  Image.new("L", (200, 200)).save(buf, format="PNG")  # small file, too many pixels
  bomb = client.post("/colorize", data={"photo": (io.BytesIO(buf.getvalue()), "wide.png")})
  assert bomb.status_code == 400 and "exceeds the limit of 10,000 pixels" in bomb.json["error"]
  assert client.post("/colorize", data={}).status_code == 400
  assert client.get("/result/nope").status_code == 404
