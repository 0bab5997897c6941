"""A local web app for colorizing photos: drop photos, compare, download at full resolution.

  python -m chromagan_jax.app --ckpt DIR [--host 127.0.0.1] [--port 7860]   (chromagan_jax/app.py)

Then open http://127.0.0.1:7860 . The page takes one or many photos (drop them or pick them),
uploads up to :data:`PARALLEL_UPLOADS` at a time with a progress bar, and shows each result
beside its original with a slider; "download" gives the colorized image at the photo's own
resolution (JPEG for JPEG photos, PNG otherwise, as ``colorize.py`` writes them). A file that
is not a readable image, is too large (``--max_upload_mb``) or has too many pixels
(``--max_pixels``, checked before decoding) gets a one-line message on the page; the server
keeps serving. Nothing is written to disk: results are kept in memory (the last
:data:`KEPT_RESULTS`) until downloaded or displaced.

Framework: Flask (with Werkzeug, which TensorBoard already installs): ~1 MB and five small
packages against Gradio's ~100 MB and several dozen (FastAPI, pandas, its front-end bundle),
which would add minutes to every CI install; the page is one self-contained HTML file with no
CDN, so it works offline. Werkzeug's threaded server suits one person or a small team on a
trusted network; put a WSGI server (gunicorn, waitress) in front of :func:`create_app` for more.
"""

import collections
import io
import os
import threading
import urllib.parse
import uuid
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

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
# Results kept in memory for download (oldest dropped first).
KEPT_RESULTS = 64
RESULT_SUFFIX = "_colorized"
_MIB = 1024 * 1024


class ResultStore:
  """The last ``capacity`` results: id -> (file name, MIME type, encoded bytes); thread-safe."""

  def __init__(self, capacity: int = KEPT_RESULTS):
    self.capacity = capacity
    self._items = collections.OrderedDict()
    self._lock = threading.Lock()

  def add(self, name: str, mimetype: str, data: bytes) -> str:
    key = uuid.uuid4().hex
    with self._lock:
      self._items[key] = (name, mimetype, data)
      while len(self._items) > self.capacity:
        self._items.popitem(last=False)
    return key

  def get(self, key: str):
    with self._lock:
      return self._items.get(key)


def encode(image: np.ndarray, fmt: str) -> bytes:
  """uint8 (H, W, 3|4) -> file bytes, with colorize.py's options (JPEG q95, no subsampling)."""
  buf = io.BytesIO()
  if fmt == "JPEG":
    Image.fromarray(image).save(buf, format="JPEG", quality=folders.JPEG_QUALITY, subsampling=0)
  else:
    Image.fromarray(image).save(buf, format="PNG")
  return buf.getvalue()


def result_name(upload_name: str, ext: str) -> str:
  """``holiday.jpg`` -> ``holiday_colorized.jpg``: never the upload's own name."""
  stem = os.path.splitext(os.path.basename(upload_name))[0] or "photo"
  return f"{stem}{RESULT_SUFFIX}{ext}"


def require_flask():
  """Flask (the 'app' extra), imported on first use; MissingExtraError when not installed."""
  return extras.require("flask", "app", "the web app")


def create_app(
  colorizer: engine.Colorizer,
  max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * _MIB,
  max_pixels: int = images.DEFAULT_MAX_PIXELS,
) -> "flask.Flask":
  """The Flask app around ``colorizer`` (a :class:`engine.Colorizer`, batch size 1)."""
  flask = require_flask()
  app = flask.Flask(__name__)
  app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes
  store = ResultStore()
  # One photo on the network at a time: 2 CPU cores gain nothing from more, and memory for
  # full-resolution Lab arrays stays bounded. Decoding and encoding run outside the lock.
  network_lock = threading.Lock()
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
    page = page.replace("@@LIMIT_MB@@", f"{limit_mb:g}")
    page = page.replace("@@LIMIT_BYTES@@", str(max_upload_bytes))
    return flask.Response(page, mimetype="text/html")

  @app.post("/colorize")
  def colorize():
    upload = flask.request.files.get("photo")
    if upload is None:
      return error("no file in the request (form field 'photo')", 400)
    name = os.path.basename(upload.filename or "upload")
    try:
      photo = images.decode(upload.read(), name=name, max_pixels=max_pixels)
    except images.ImageError as e:
      return error(str(e), 400)
    with network_lock:
      _, colour, _ = next(colorizer.stream([photo]))
    fmt, ext = folders.output_format(photo, name)
    data = encode(colour, fmt)
    out_name = result_name(name, ext)
    key = store.add(out_name, "image/jpeg" if fmt == "JPEG" else "image/png", data)
    height, width = colour.shape[:2]
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
const PARALLEL = @@PARALLEL@@, LIMIT_BYTES = @@LIMIT_BYTES@@;
const drop = document.getElementById('drop'), input = document.getElementById('files');
const statusEl = document.getElementById('status'), bar = document.getElementById('progress');
const results = document.getElementById('results');
let total = 0, done = 0, failed = 0;
function showProgress() {
  bar.hidden = total === 0; bar.max = Math.max(total, 1); bar.value = done;
  statusEl.textContent = done < total ? `Colorizing: ${done} of ${total} done`
    : `Done: ${done - failed} colorized, ${failed} failed`;
  statusEl.dataset.done = String(done); statusEl.dataset.total = String(total);
}
function text(tag, cls, content) {
  const el = document.createElement(tag); if (cls) el.className = cls;
  el.textContent = content; return el;
}
async function colorizeOne(file) {
  const card = document.createElement('div'); card.className = 'card pending';
  card.appendChild(text('div', 'name', file.name + ': colorizing...'));
  results.prepend(card);
  let message = null, data = null;
  if (file.size > LIMIT_BYTES) {  // the server refuses it too (413); spare the upload
    message = `${file.name}: larger than the limit of @@LIMIT_MB@@ MB (--max_upload_mb)`;
  } else try {
    const form = new FormData(); form.append('photo', file, file.name);
    const response = await fetch('colorize', {
      method: 'POST', body: form, headers: { 'X-File-Name': encodeURIComponent(file.name) } });
    const body = await response.json().catch(() => ({ error: `server error ${response.status}` }));
    if (response.ok) data = body; else message = body.error || `server error ${response.status}`;
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
