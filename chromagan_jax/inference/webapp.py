"""A local web app for colorizing photos: drop photos, compare, download at full resolution.

  python -m chromagan_jax.app --ckpt DIR [--host 127.0.0.1] [--port 7860]   (chromagan_jax/app.py)

Then open http://127.0.0.1:7860 . The page takes one or many photos (drop them or pick them),
uploads up to :data:`PARALLEL_UPLOADS` at a time with a progress bar, and shows each result
beside its original with a slider; "download" gives the colorized image at the photo's own
resolution (JPEG for JPEG photos, PNG otherwise, as ``colorize.py`` writes them). A file that
is not a readable image, is too large (``--max_upload_mb``) or has too many pixels
(``--max_pixels``, checked before decoding) gets a one-line message on the page; the server
keeps serving. Results are kept in memory, up to ``--max_result_mb`` of encoded bytes (oldest
dropped first), until downloaded or displaced.

Memory stays bounded under load (docs/app.md has the figures): one worker thread decodes,
colorizes and encodes the photos one at a time, so full-resolution arrays exist for one photo
only; at most ``--max_in_flight`` uploads are accepted at once, waiting for the worker in
temporary files; a further upload is answered 503 with ``Retry-After`` and a JSON message
before its body is parsed, and the page retries it after that delay, saying so on its card.
The server is waitress (:func:`make_server`): a fixed pool of threads, request bodies over
512 KB buffered to temporary files rather than memory, at most :data:`CONNECTION_LIMIT` open
connections.

Framework: Flask (with Werkzeug, which TensorBoard already installs): ~1 MB and five small
packages against Gradio's ~100 MB and several dozen (FastAPI, pandas, its front-end bundle),
which would add minutes to every CI install; the page is one self-contained HTML file with no
CDN, so it works offline. waitress is one pure-Python package with no dependencies.
"""

import collections
import concurrent.futures
import io
import math
import os
import threading
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING

import numpy as np

from chromagan_jax import extras
from chromagan_jax.data import images
from chromagan_jax.inference import engine, folders

if TYPE_CHECKING:
  import flask

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860  # Gradio's default: what users of colorization demos expect.
DEFAULT_MAX_UPLOAD_MB = 50
# Photos uploaded at once by the page (the server colorizes one at a time).
PARALLEL_UPLOADS = 4
# Uploads accepted at once: one on the worker, the others waiting in temporary files (under a
# MB of memory each). Two pages' worth (PARALLEL_UPLOADS each) are served without a 503.
DEFAULT_MAX_IN_FLIGHT = 2 * PARALLEL_UPLOADS
# Longest Retry-After sent (seconds).
MAX_RETRY_AFTER_S = 10
# Server threads beyond the in-flight bound: the page, results and 503s are answered while
# every slot is busy.
SPARE_THREADS = 4
# Open connections waitress accepts (its default); more wait in the kernel's listen backlog.
CONNECTION_LIMIT = 100
# Encoded results kept in memory for download (oldest dropped first).
DEFAULT_MAX_RESULT_MB = 256
RESULT_SUFFIX = "_colorized"
# The page retries a 503 after its Retry-After (plus up to half again, so that refused pages
# do not return together) this many times before it shows the upload as failed.
PAGE_RETRIES = 100
_MIB = 1024 * 1024


class ResultStore:
  """Encoded results, id -> (file name, MIME type, bytes), up to ``capacity_bytes``; thread-safe.

  Adding a result drops the oldest until the total fits; the newest is always kept (a result
  alone larger than the capacity displaces all others), so a just-returned URL works.
  """

  def __init__(self, capacity_bytes: int = DEFAULT_MAX_RESULT_MB * _MIB):
    self.capacity_bytes = capacity_bytes
    self._items = collections.OrderedDict()
    self._bytes = 0
    self._lock = threading.Lock()

  def add(self, name: str, mimetype: str, data: bytes) -> str:
    key = uuid.uuid4().hex
    with self._lock:
      self._items[key] = (name, mimetype, data)
      self._bytes += len(data)
      while self._bytes > self.capacity_bytes and len(self._items) > 1:
        _, (_, _, old) = self._items.popitem(last=False)
        self._bytes -= len(old)
    return key

  def get(self, key: str):
    with self._lock:
      return self._items.get(key)

  @property
  def nbytes(self) -> int:
    """Encoded bytes held now."""
    with self._lock:
      return self._bytes

  def __len__(self) -> int:
    with self._lock:
      return len(self._items)


class Admission:
  """At most ``limit`` uploads in flight; :meth:`try_enter` refuses, never waits, beyond it.

  Refusing rather than queueing without end keeps waiting uploads out of the process: a
  client told to retry holds its photo itself. :meth:`retry_after` estimates when a slot
  frees from the recent time per photo (:meth:`record`).
  """

  def __init__(self, limit: int):
    if limit < 1:
      raise ValueError(f"limit must be >= 1, got {limit}")
    self.limit = limit
    self._count = 0
    self._seconds = None  # moving average of the worker's time per photo
    self._lock = threading.Lock()

  def try_enter(self) -> bool:
    with self._lock:
      if self._count >= self.limit:
        return False
      self._count += 1
      return True

  def leave(self) -> None:
    with self._lock:
      self._count -= 1

  def record(self, seconds: float) -> None:
    """One photo took ``seconds`` on the worker."""
    with self._lock:
      self._seconds = seconds if self._seconds is None else 0.7 * self._seconds + 0.3 * seconds

  @property
  def in_flight(self) -> int:
    with self._lock:
      return self._count

  def retry_after(self) -> int:
    """Whole seconds in [1, MAX_RETRY_AFTER_S]: about when the photo being colorized ends and
    frees a slot (the first photo's time includes compiling, hence the cap)."""
    with self._lock:
      seconds = self._seconds or 1.0
    return min(MAX_RETRY_AFTER_S, max(1, math.ceil(seconds)))


def encode(image: np.ndarray, fmt: str) -> bytes:
  """uint8 (H, W, 3|4) -> file bytes, with colorize.py's options (:func:`folders.encode_image`)."""
  return folders.encode_image(image, fmt)


def result_name(upload_name: str, ext: str) -> str:
  """``holiday.jpg`` -> ``holiday_colorized.jpg``: never the upload's own name."""
  stem = os.path.splitext(os.path.basename(upload_name))[0] or "photo"
  return f"{stem}{RESULT_SUFFIX}{ext}"


def require_flask():
  """Flask and waitress (the 'app' extra), imported on first use; Flask's module returned.
  MissingExtraError when either is not installed."""
  extras.require("waitress.server", "app", "the web app")
  return extras.require("flask", "app", "the web app")


def create_app(
  colorizer: engine.Colorizer,
  max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * _MIB,
  max_pixels: int = images.DEFAULT_MAX_PIXELS,
  max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
  max_result_bytes: int = DEFAULT_MAX_RESULT_MB * _MIB,
) -> "flask.Flask":
  """The Flask app around ``colorizer`` (a :class:`engine.Colorizer`, batch size 1).

  ``max_in_flight`` uploads are worked on at once; a further one gets 503 with ``Retry-After``
  (whole seconds) and JSON ``{error, retry_after, in_flight, max_in_flight}``.
  ``app.extensions['chromagan']`` holds the :class:`Admission`, the :class:`ResultStore` and
  the worker (a one-thread executor).
  """
  flask = require_flask()
  app = flask.Flask(__name__)
  app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes
  store = ResultStore(max_result_bytes)
  admission = Admission(max_in_flight)
  # One worker decodes, colorizes and encodes every photo, one at a time: 2 cores gain nothing
  # from more (the network and OpenCV's compose use both), the full-resolution arrays exist
  # for one photo only, and they are allocated by one thread, whose malloc arena reuses them
  # (with allocator.keep_freed_memory, each thread's arena would keep its own photo-sized
  # buffers). Uploads waiting for it stay in Werkzeug's spooled temporary files.
  worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="colorize")
  app.extensions["chromagan"] = {"admission": admission, "store": store, "worker": worker}
  limit_mb = max_upload_bytes / _MIB

  def error(message: str, status: int):
    return flask.jsonify(error=message), status

  @app.errorhandler(413)
  def too_large(_):
    # The page names the file in a header: the form, and its file name, is not read.
    name = os.path.basename(urllib.parse.unquote(flask.request.headers.get("X-File-Name", "")))
    name = name or "upload"
    return error(f"{name}: larger than the limit of {limit_mb:g} MB (--max_upload_mb)", 413)

  @app.get("/")
  def index():
    page = _PAGE.replace("@@PARALLEL@@", str(PARALLEL_UPLOADS))
    page = page.replace("@@RETRIES@@", str(PAGE_RETRIES))
    page = page.replace("@@LIMIT_MB@@", f"{limit_mb:g}")
    page = page.replace("@@LIMIT_BYTES@@", str(max_upload_bytes))
    return flask.Response(page, mimetype="text/html")

  def process(upload, name: str):
    """On the worker: upload -> (result name, MIME type, encoded bytes, width, height)."""
    start = time.monotonic()
    try:
      photo = images.decode(upload.read(), name=name, max_pixels=max_pixels)
      _, colour, _ = next(colorizer.stream([photo]))
      fmt, ext = folders.output_format(photo, name)
      mimetype = "image/jpeg" if fmt == "JPEG" else "image/png"
      height, width = colour.shape[:2]
      return result_name(name, ext), mimetype, encode(colour, fmt), width, height
    finally:
      admission.record(time.monotonic() - start)

  @app.post("/colorize")
  def colorize():
    # Both checks come before the body is parsed: a refused upload costs no memory here.
    if (flask.request.content_length or 0) > max_upload_bytes:
      flask.abort(413)
    if not admission.try_enter():
      wait = admission.retry_after()
      response = flask.jsonify(
        error=f"server busy: {admission.limit} photos are being colorized; retry in {wait} s",
        retry_after=wait,
        in_flight=admission.in_flight,
        max_in_flight=admission.limit,
      )
      response.status_code = 503
      response.headers["Retry-After"] = str(wait)
      return response
    try:
      upload = flask.request.files.get("photo")
      if upload is None:
        return error("no file in the request (form field 'photo')", 400)
      name = os.path.basename(upload.filename or "upload")
      try:
        out_name, mimetype, data, width, height = worker.submit(process, upload, name).result()
      except images.ImageError as e:
        return error(str(e), 400)
    finally:
      admission.leave()
    key = store.add(out_name, mimetype, data)
    return flask.jsonify(
      name=out_name, width=width, height=height, url=flask.url_for("result", key=key)
    )

  @app.get("/result/<key>")
  def result(key):
    item = store.get(key)
    if item is None:
      return error("result no longer kept; colorize the photo again", 404)
    name, mimetype, data = item
    download = flask.request.args.get("download") == "1"
    return flask.send_file(
      io.BytesIO(data), mimetype=mimetype, as_attachment=download, download_name=name
    )

  return app


def make_server(app, host: str, port: int, threads: int, connection_limit: int = CONNECTION_LIMIT):
  """A waitress server for ``app`` on host:port (bound, not yet serving: call ``.run()``).

  ``threads`` is the fixed pool running the app; request bodies over 512 KB are buffered in
  temporary files, not memory, before the app sees them. Raises OSError when the port cannot
  be bound.
  """
  server = extras.require("waitress.server", "app", "the web app")
  return server.create_server(
    app,
    host=host,
    port=port,
    threads=threads,
    connection_limit=connection_limit,
    asyncore_use_poll=True,  # select() stops at 1024 descriptors
    clear_untrusted_proxy_headers=True,
    ident="chromagan",
  )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ChromaGAN colorizer</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
 h1 { font-size: 1.4em; margin-bottom: .2em; }
 #drop { display: block; border: 2px dashed #888; border-radius: 10px; padding: 2em;
         text-align: center; background: #fafafa; cursor: pointer; }
 #drop.over { background: #e8f0ff; border-color: #36c; }
 #status { margin: .8em 0; min-height: 1.4em; }
 progress { width: 100%; height: 1em; }
 .card { border: 1px solid #ddd; border-radius: 8px; padding: .8em; margin: .8em 0; }
 .card.error { border-color: #c33; background: #fff3f3; color: #a00; }
 .card.waiting { border-color: #c90; background: #fffbea; color: #750; }
 .pair { display: grid; grid-template-columns: 1fr 1fr; gap: .6em; max-width: 820px; }
 .pair figure { margin: 0; } .pair img { width: 100%; display: block; }
 figcaption { font-size: .85em; color: #555; }
 .slider { position: relative; margin-top: .6em; max-width: 540px; }
 .slider img { width: 100%; display: block; }
 .slider .top { position: absolute; inset: 0; clip-path: inset(0 50% 0 0); }
 .slider input { width: 100%; }
 a.download { display: inline-block; margin-top: .5em; font-weight: 600; }
</style></head>
<body>
<h1>ChromaGAN colorizer</h1>
<p>Drop black-and-white (or colour) photos; each is colorized from its lightness and can be
downloaded at its full resolution. Up to @@LIMIT_MB@@ MB per file.</p>
<label id="drop">Drop photos here or click to choose
 <input id="files" type="file" accept="image/*" multiple hidden></label>
<div id="status"></div>
<progress id="progress" value="0" max="1" hidden></progress>
<div id="results"></div>
<script>
const PARALLEL = @@PARALLEL@@, LIMIT_BYTES = @@LIMIT_BYTES@@, RETRIES = @@RETRIES@@;
const drop = document.getElementById('drop'), input = document.getElementById('files');
const statusEl = document.getElementById('status'), bar = document.getElementById('progress');
const results = document.getElementById('results');
let total = 0, done = 0, failed = 0, waiting = 0;
function showProgress() {
  bar.hidden = total === 0; bar.max = Math.max(total, 1); bar.value = done;
  const busy = waiting ? `, ${waiting} waiting for the busy server` : '';
  statusEl.textContent = done < total ? `Colorizing: ${done} of ${total} done${busy}`
    : `Done: ${done - failed} colorized, ${failed} failed`;
  statusEl.dataset.done = String(done); statusEl.dataset.total = String(total);
  statusEl.dataset.waiting = String(waiting);
}
function text(tag, cls, content) {
  const el = document.createElement(tag); if (cls) el.className = cls;
  el.textContent = content; return el;
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// One upload; a 503 (server busy) is retried after its Retry-After, with the wait on the card.
async function upload(file, card) {
  for (let attempt = 1; ; attempt++) {
    const form = new FormData(); form.append('photo', file, file.name);
    const response = await fetch('colorize', {
      method: 'POST', body: form, headers: { 'X-File-Name': encodeURIComponent(file.name) } });
    const body = await response.json().catch(() => ({ error: `server error ${response.status}` }));
    if (response.ok) return [body, null];
    if (response.status !== 503 || attempt > RETRIES) {
      const busy = response.status === 503 ? ` (gave up after ${attempt} tries)` : '';
      return [null, (body.error || `server error ${response.status}`) + busy];
    }
    const wait = Math.max(1, Number(response.headers.get('Retry-After')) || body.retry_after || 1);
    const line = card.querySelector('.name');
    line.textContent = `${file.name}: server busy (${body.in_flight ?? '?'} of `
      + `${body.max_in_flight ?? '?'} slots in use); retrying in ${wait} s (try ${attempt + 1})`;
    card.className = 'card waiting';
    waiting++; showProgress();
    await sleep(wait * 1000 * (1 + 0.5 * Math.random()));
    waiting--; showProgress();
    line.textContent = file.name + ': colorizing...'; card.className = 'card pending';
  }
}
async function colorizeOne(file) {
  const card = document.createElement('div'); card.className = 'card pending';
  card.appendChild(text('div', 'name', file.name + ': colorizing...'));
  results.prepend(card);
  let message = null, data = null;
  if (file.size > LIMIT_BYTES) {  // the server refuses it too (413); spare the upload
    message = `${file.name}: larger than the limit of @@LIMIT_MB@@ MB (--max_upload_mb)`;
  } else try {
    [data, message] = await upload(file, card);
  } catch (e) { message = `${file.name}: upload failed (${e})`; }
  card.replaceChildren();
  if (data === null) {
    card.className = 'card error'; failed++;
    card.appendChild(text('div', 'message', message));
  } else {
    card.className = 'card ok';
    const original = URL.createObjectURL(file);
    card.appendChild(text('div', 'name', `${data.name} (${data.width} x ${data.height})`));
    const pair = document.createElement('div'); pair.className = 'pair';
    for (const [src, caption] of [[original, 'original'], [data.url, 'colorized']]) {
      const fig = document.createElement('figure'), img = document.createElement('img');
      img.src = src; img.alt = caption; fig.append(img, text('figcaption', '', caption));
      pair.appendChild(fig);
    }
    const slider = document.createElement('div'); slider.className = 'slider';
    const under = document.createElement('img'), over = document.createElement('img');
    under.src = original; over.src = data.url; over.className = 'top';
    const range = document.createElement('input'); range.type = 'range'; range.value = 50;
    range.oninput = () => { over.style.clipPath = `inset(0 ${100 - range.value}% 0 0)`; };
    slider.append(under, over, range);
    const link = text('a', 'download', 'download ' + data.name);
    link.href = data.url + '?download=1'; link.download = data.name;
    card.append(pair, text('div', '', 'slide: colorized (left) | original (right)'), slider, link);
  }
  done++; showProgress();
}
async function colorizeAll(files) {
  files = Array.from(files); total += files.length; showProgress();
  const queue = files.slice();
  const worker = async () => { while (queue.length) await colorizeOne(queue.shift()); };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, files.length) }, worker));
}
input.onchange = () => { colorizeAll(input.files); input.value = ''; };
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = (e) => {
  e.preventDefault(); drop.classList.remove('over'); colorizeAll(e.dataTransfer.files);
};
</script></body></html>
"""
