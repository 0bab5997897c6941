"""End-to-end test of the web app (chromagan_jax.inference.webapp) in a real headless browser.

The server is the real entry point (``python -m chromagan_jax.app``) on a free 127.0.0.1
port, killed at the end; the browser is Debian's chromium driven through chromedriver by
Selenium (no browser or driver is downloaded at run time). Without chromium the test is
skipped with the reason, except under CI (``CI=true``), where it fails: the Makefile's test
target installs chromium where it can.
"""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import (
  ab_input_sensitivity,
  colourful_generator_variables,
  random_generator_variables,
  skip_or_fail_under_ci,
  small_config,
  smooth_rgb,
)
from PIL import Image
from skimage import color as skcolor

from chromagan_jax.data import images, sources
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
      # Two uploads at once: of the page's four in step 3, two are answered 503 and retried.
      + ["--max_upload_mb", "2", "--max_in_flight", "2"],
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
  photo = sources.bundled_photos("holdout")[0]
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
  # still serves after the bad files. With --max_in_flight 2 some are refused (503) first: the
  # page retries them after Retry-After, so none fails.
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


class _BlockingColorizer:
  """Stands in for engine.Colorizer: holds each photo until ``release`` is set, returns it."""

  def __init__(self):
    self.release = threading.Event()
    self.started = threading.Event()

  def stream(self, photos):
    self.started.set()
    assert self.release.wait(30), "test did not release the colorizer"
    for photo in photos:
      yield photo, photo.rgb, None


class _UnreadableBody(io.RawIOBase):
  """A request body that fails the test if the server reads it."""

  def readable(self):
    return True

  def readinto(self, _):
    raise AssertionError("the server read the body of an upload it refuses")


def _jpeg(width=40, height=30) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(smooth_rgb(height, width)).save(buf, format="JPEG")
  return buf.getvalue()


def test_busy_server_answers_503_before_reading_the_body():
  """Beyond --max_in_flight: 503, Retry-After and a JSON message; the body stays unread."""
  from chromagan_jax.inference import webapp as app_lib

  colorizer = _BlockingColorizer()
  app = app_lib.create_app(colorizer, max_in_flight=1)
  admission = app.extensions["chromagan"]["admission"]
  first = {}

  def post_first():
    with app.test_client() as client:
      first["response"] = client.post(
        "/colorize", data={"photo": (io.BytesIO(_jpeg()), "first.jpg")}
      )

  thread = threading.Thread(target=post_first)
  thread.start()
  try:
    assert colorizer.started.wait(30) and admission.in_flight == 1
    busy = app.test_client().post(
      "/colorize",
      data=b"-" * 1000,
      content_type="multipart/form-data; boundary=x",
      environ_overrides={"wsgi.input": _UnreadableBody()},
    )
    assert busy.status_code == 503, busy.get_data(as_text=True)
    wait = int(busy.headers["Retry-After"])
    assert 1 <= wait <= app_lib.MAX_RETRY_AFTER_S
    assert busy.json["retry_after"] == wait
    assert busy.json["in_flight"] == 1 and busy.json["max_in_flight"] == 1
    assert busy.json["error"].startswith("server busy")
  finally:
    colorizer.release.set()
    thread.join(30)
  assert first["response"].status_code == 200 and admission.in_flight == 0
  again = app.test_client().post("/colorize", data={"photo": (io.BytesIO(_jpeg()), "b.jpg")})
  assert again.status_code == 200 and again.json["name"] == "b_colorized.jpg"


def test_result_store_is_bounded_by_bytes():
  from chromagan_jax.inference import webapp as app_lib

  store = app_lib.ResultStore(capacity_bytes=100)
  keys = [store.add(f"r{i}.png", "image/png", bytes(30)) for i in range(5)]
  assert store.nbytes == 90 and len(store) == 3  # the oldest two dropped
  assert [store.get(k) is not None for k in keys] == [False, False, True, True, True]
  big = store.add("big.png", "image/png", bytes(500))  # alone over the capacity: kept alone
  assert store.get(big)[0] == "big.png" and len(store) == 1 and store.nbytes == 500
  assert store.get(store.add("s.png", "image/png", bytes(10))) is not None
  assert store.get(big) is None and store.nbytes == 10


def test_page_retries_503_after_retry_after_and_says_so(tmp_path):
  """The page's upload() in Node: a 503 is retried after Retry-After, with a visible message."""
  node = shutil.which("node")
  if node is None:
    pytest.skip("node not found (runs the page's script without a browser)")
  from chromagan_jax.inference import webapp as app_lib

  page = app_lib.create_app(_BlockingColorizer()).test_client().get("/").get_data(as_text=True)
  script = page[page.index("<script>") + len("<script>") : page.index("</script>")]
  upload = script[
    script.index("async function upload") : script.index("async function colorizeOne")
  ]
  harness = (
    """
let waiting = 0, calls = 0; const RETRIES = 3, waits = [], shown = [];
function showProgress() {}
const sleep = async (ms) => { waits.push(ms); shown.push(line.textContent); };
const line = { textContent: '' }, card = { className: '', querySelector: () => line };
globalThis.fetch = async () => {
  calls++;
  if (calls < 3) return new Response(JSON.stringify(
    { error: 'server busy', retry_after: 3, in_flight: 8, max_in_flight: 8 }),
    { status: 503, headers: { 'Retry-After': '3' } });
  return new Response(JSON.stringify({ name: 'a_colorized.jpg' }), { status: 200 });
};
const file = new File([new Uint8Array(10)], 'a.jpg');
"""
    + upload
    + """
upload(file, card).then(([data, message]) => console.log(JSON.stringify(
  { data, message, calls, waits, shown, waiting })));
"""
  )
  path = tmp_path / "page_retry.mjs"
  path.write_text(harness)
  out = subprocess.run([node, str(path)], capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  got = json.loads(out.stdout)
  assert got["data"] == {"name": "a_colorized.jpg"} and got["message"] is None
  assert got["calls"] == 3 and got["waiting"] == 0
  assert all(3000 <= w <= 4500 for w in got["waits"]) and len(got["waits"]) == 2
  assert "a.jpg: server busy (8 of 8 slots in use); retrying in 3 s (try 2)" in got["shown"]


# The load test: fixed counts on loopback, a deadline, the server killed at the end.
LOAD_UPLOADS = 32
LOAD_MAX_IN_FLIGHT = 4
LOAD_DEADLINE_S = 120
# Peak RSS over idle while LOAD_UPLOADS 12 MP JPEGs arrive at once: one photo's
# full-resolution working set (~0.6-0.7 GB at 12 MP) and the results kept, not one per upload.
LOAD_PEAK_OVER_IDLE_MIB = 1100


@pytest.mark.slow  # starts the real server: ~60-90 s on 2 loaded cores
def test_server_under_load_answers_all_and_bounds_memory(tmp_path):
  import app_load  # bench/app_load.py (conftest puts bench/ on the path)

  config = small_config()
  checkpoint.save_generator(tmp_path / "ckpt", random_generator_variables(config), config)
  buf = io.BytesIO()
  Image.fromarray(smooth_rgb(3000, 4000)).save(buf, format="JPEG", quality=90)
  photo = buf.getvalue()  # 12 MP
  args = ["--max_in_flight", str(LOAD_MAX_IN_FLIGHT)]
  with app_load.serve(tmp_path / "ckpt", args, log_path=str(tmp_path / "server.log")) as (
    proc,
    port,
  ):
    assert app_load.post(port, _jpeg(), "warm.jpg")[0] == 200  # compiles the network
    idle = app_load.rss_mib(proc.pid)
    if not app_load.reset_peak(proc.pid):
      pytest.skip("/proc/PID/clear_refs refused: the peak cannot be measured from idle")
    result = app_load.fire(port, photo, LOAD_UPLOADS, LOAD_DEADLINE_S)
    peak_over_idle = app_load.rss_mib(proc.pid, "VmHWM") - idle
    status, _, body = app_load.post(port, _jpeg(), "after.jpg")
    assert status == 200 and app_load.get(port, body["url"])[0] == 200  # still serving
    assert app_load.get(port, "/")[0] == 200
  assert result["unanswered"] == 0, result
  assert set(result["statuses"]) <= {200, 503}, result
  assert result["statuses"].get(503, 0) >= 1, result  # the bound refused some
  assert 1 <= result["statuses"].get(200, 0), result
  assert peak_over_idle < LOAD_PEAK_OVER_IDLE_MIB, (peak_over_idle, result)
