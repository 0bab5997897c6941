"""Peak memory of the web app under N simultaneous 12 MP uploads (loopback only, bounded).

  python bench/app_load.py                        # N = 16, 48, 200; paper-size random weights
  python bench/app_load.py --counts 200 --max_in_flight 4 --markdown

For each N: starts the real server (``python -m chromagan_jax.app``) on a free 127.0.0.1 port,
colorizes one small photo (compiles the network), reads its resident memory (idle), resets
its peak (``/proc/PID/clear_refs``), then N client threads POST the same 12 MP JPEG at once
(a barrier releases them together; one connection each, no retries). Reported: the answers by
status, peak RSS over idle (``VmHWM`` - idle ``VmRSS``), the wall time, and whether the server
still colorizes a photo afterwards. Every request has a timeout and the whole run a deadline;
the server is killed at the end. The photo is bench/colorize_e2e.py's grainy 4000x3000 JPEG
(quality 90, ~1.6 MB), so that decoding and encoding cost what a camera photo's do.

tests/app_test.py's load test uses :func:`serve`, :func:`fire` and :func:`rss_mib` with a
small checkpoint.
"""

import argparse
import contextlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_START_S = 300  # imports + checkpoint + compile on a loaded 2-core machine
REQUEST_TIMEOUT_S = 300
BOUNDARY = "chromaganloadboundary"


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def rss_mib(pid: int, key: str = "VmRSS") -> float:
  """``key`` (VmRSS, VmHWM) of process ``pid`` from /proc/PID/status, in MiB."""
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith(key + ":"):
        return int(line.split()[1]) / 1024
  raise KeyError(key)


def reset_peak(pid: int) -> bool:
  """Resets ``VmHWM`` of ``pid`` to its current RSS (Linux >= 4.0); False where refused."""
  try:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


@contextlib.contextmanager
def serve(ckpt: str, args=(), log_path: str | None = None, env=None):
  """Runs ``python -m chromagan_jax.app --ckpt ckpt *args`` on a free port until the block ends.

  Yields (process, port) once the port accepts connections; kills the server afterwards.
  Raises RuntimeError with the log's tail when it exits or does not listen in time.
  """
  port = free_port()
  env = dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL="3")
  with contextlib.ExitStack() as stack:
    if log_path is None:
      log_path = stack.enter_context(tempfile.TemporaryDirectory()) + "/server.log"
    out = stack.enter_context(open(log_path, "w"))
    command = [sys.executable, "-m", "chromagan_jax.app", "--ckpt", str(ckpt)]
    proc = subprocess.Popen(
      command + ["--port", str(port), *args],
      cwd=ROOT,
      env=env,
      stdout=out,
      stderr=subprocess.STDOUT,
    )
    try:
      deadline = time.monotonic() + SERVER_START_S
      while True:
        try:
          with socket.create_connection(("127.0.0.1", port), timeout=1):
            break
        except OSError:
          if proc.poll() is not None or time.monotonic() > deadline:
            with open(log_path) as f:
              tail = f.read()[-2000:]
            raise RuntimeError(f"app did not start: {tail}") from None
          time.sleep(0.5)
      yield proc, port
    finally:
      proc.kill()
      proc.wait()


def multipart(data: bytes, name: str) -> tuple[bytes, str]:
  """(body, content type) of a form with ``data`` as its file field 'photo'."""
  head = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="photo"; filename="{name}"\r\n'
    "Content-Type: image/jpeg\r\n\r\n"
  ).encode()
  tail = f"\r\n--{BOUNDARY}--\r\n".encode()
  return head + data + tail, f"multipart/form-data; boundary={BOUNDARY}"


def post(port: int, data: bytes, name: str, timeout: float = REQUEST_TIMEOUT_S):
  """POST /colorize on 127.0.0.1:port -> (status, headers dict, JSON body or None)."""
  body, content_type = multipart(data, name)
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
  try:
    conn.request("POST", "/colorize", body, {"Content-Type": content_type})
    response = conn.getresponse()
    raw = response.read()
    try:
      parsed = json.loads(raw)
    except ValueError:
      parsed = None
    return response.status, dict(response.getheaders()), parsed
  finally:
    conn.close()


def get(port: int, path: str, timeout: float = 60) -> tuple[int, bytes]:
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
  try:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()
  finally:
    conn.close()


def fire(port: int, data: bytes, n: int, deadline_s: float) -> dict:
  """``n`` threads POST ``data`` at once (one connection each); waits at most ``deadline_s``.

  Returns {"statuses": {status or error text: count}, "unanswered": threads still waiting at
  the deadline, "wall_s", "retry_after": the Retry-After values seen}.
  """
  statuses, retry_after = {}, set()
  lock = threading.Lock()
  barrier = threading.Barrier(n)

  def one(i):
    try:
      barrier.wait(timeout=60)
      status, headers, _ = post(port, data, f"load{i}.jpg")
      key = status
      if "Retry-After" in headers:
        with lock:
          retry_after.add(headers["Retry-After"])
    except Exception as e:  # noqa: BLE001 (every failure is counted and reported)
      key = f"{type(e).__name__}: {e}"[:120]
    with lock:
      statuses[key] = statuses.get(key, 0) + 1

  start = time.monotonic()
  threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(max(0.0, start + deadline_s - time.monotonic()))
  return {
    "statuses": statuses,
    "unanswered": sum(t.is_alive() for t in threads),
    "wall_s": round(time.monotonic() - start, 1),
    "retry_after": sorted(retry_after, key=int),
  }


def small_jpeg() -> bytes:
  from PIL import Image

  buf = io.BytesIO()
  Image.new("RGB", (96, 64), (120, 110, 90)).save(buf, format="JPEG")
  return buf.getvalue()


def load_run(ckpt: str, photo: bytes, n: int, server_args, deadline_s: float) -> dict:
  """One server, warmed up, then ``n`` simultaneous uploads of ``photo``; see the module doc."""
  with serve(ckpt, server_args) as (proc, port):
    warm = post(port, small_jpeg(), "warm.jpg")[0]
    time.sleep(1.0)  # let the warm-up's buffers settle
    idle = rss_mib(proc.pid)
    peak_reset = reset_peak(proc.pid)
    result = fire(port, photo, n, deadline_s)
    peak = rss_mib(proc.pid, "VmHWM")
    after = post(port, small_jpeg(), "after.jpg")
    served = after[0] == 200 and get(port, after[2]["url"])[0] == 200
    return {
      "n": n,
      "warm_status": warm,
      "idle_rss_mib": round(idle),
      "peak_rss_mib": round(peak),
      "peak_over_idle_mib": round(peak - idle),
      "peak_reset": peak_reset,
      "serves_after": served,
      **result,
    }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--ckpt", default=None, help="default: random paper-size weights")
  parser.add_argument("--counts", default="16,48,200", help="simultaneous uploads per run")
  parser.add_argument("--max_in_flight", type=int, default=None, help="default: the app's")
  parser.add_argument("--unbounded", action="store_true", help="--max_in_flight 100000")
  parser.add_argument("--deadline_s", type=float, default=600, help="per run")
  parser.add_argument("--out", default=None, help="write the results as JSON here")
  args = parser.parse_args(argv)

  import colorize_e2e  # noqa: I001 (bench/: sets sys.path and the environment)
  import common

  server_args = []
  if args.unbounded:
    server_args += ["--max_in_flight", "100000"]
  elif args.max_in_flight:
    server_args += ["--max_in_flight", str(args.max_in_flight)]
  with tempfile.TemporaryDirectory() as folder:
    ckpt = args.ckpt or colorize_e2e.random_checkpoint(folder)
    with open(colorize_e2e.make_photo(folder, (4000, 3000)), "rb") as f:
      photo = f.read()
    runs = []
    for n in [int(x) for x in args.counts.split(",")]:
      run = load_run(ckpt, photo, n, server_args, args.deadline_s)
      run["photo_mb"] = round(len(photo) / 1e6, 2)
      print(json.dumps(run), flush=True)
      runs.append(run)
  report = {"machine": common.machine_info(), "server_args": server_args, "runs": runs}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(report, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
