"""Drive an attention-viewer page in headless Chromium, offline (for tests, screenshots, timings).

``run_steps(page_html, steps)`` writes the page with two small scripts added (one at the top of
<head> that records JavaScript errors, one at the end of <body> that performs ``steps`` once the
viewer is idle and snapshots the DOM after each), loads it from disk in ``chromium --headless``
with every request sent to a proxy that does not exist (so the page cannot reach a network), and
returns the snapshots, the errors and timings. With ``screenshot=`` it runs the same steps again
and saves a PNG of the final state.

Steps: ``{"click": css}`` (first match; ``"index": n`` for the n-th; ``"panel": m`` inside panel m),
``{"select": css, "value": v}`` (sets a <select> and fires change), ``{"dblclick": css}``, and
``{"hover": css}`` (a mousemove at the element's centre). These are synthetic events (dispatched by a
script): they cannot show what real input does (hit testing, ``mouseleave`` when the element under the
pointer is replaced, focus, wheel). ``Browser`` drives a page with real input instead, over the DevTools
protocol (``Input.dispatchMouseEvent`` / ``dispatchKeyEvent``), in real time, and times each input until
the result is painted.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--proxy-server=127.0.0.1:9",
         "--proxy-bypass-list=<-loopback>", "--enable-logging=stderr", "--v=0"]

_ERRORS_JS = """<script>(function () {
  var errs = window.__havErrors = [];
  window.addEventListener('error', function (e) { errs.push('error: ' + (e.message || e.type) +
    (e.target && e.target.src ? ' ' + e.target.src : '')); }, true);
  window.addEventListener('unhandledrejection', function (e) { errs.push('unhandled rejection: ' + e.reason); });
  var orig = console.error;
  console.error = function () { errs.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return orig.apply(console, arguments); };
})();</script>"""

_STEPS_JS = """<script>(function () {
  var STEPS = %s;
  function all(sel, panel) {
    var scope = panel === undefined ? document : document.querySelectorAll('.hav-panel')[panel];
    return Array.prototype.slice.call(scope.querySelectorAll(sel));
  }
  function pick(step, key) {
    var found = all(step[key], step.panel), n = step.index || 0;
    if (!found[n]) { throw new Error('no element ' + step[key] + ' [' + n + ']'); }
    return found[n];
  }
  function ints(nodes, attr) { return nodes.map(function (e) { return Number(e.dataset[attr]); }); }
  function snapshot(root) {
    var s = {view: root.dataset.view, layer: root.dataset.layer, error: root.dataset.error || null,
             layerSelect: root.querySelector('select.hav-layer').value, renderMs: root.hav.lastRenderMs,
             tip: (root.querySelector('.hav-tip') || {}).textContent || '', decoded: root.hav.cache.size,
             resources: performance.getEntriesByType('resource').map(function (e) { return e.name; }),
             panels: []};
    all('.hav-panel').forEach(function (p, k) {
      var title = p.querySelector('.hav-matrix-view .hav-matrix-title');
      var panel = root.hav.panels[k];
      s.panels.push({
        headsOn: ints(Array.prototype.slice.call(p.querySelectorAll('.hav-head-toggle.hav-on')), 'head'),
        selectedLeft: ints(Array.prototype.slice.call(p.querySelectorAll('.hav-left .hav-tok.hav-selected')), 'i'),
        selectedRight: ints(Array.prototype.slice.call(p.querySelectorAll('.hav-right .hav-tok.hav-selected')), 'i'),
        lines: (panel.highlight || []).map(function (l) { return [l[0], l[1], l[2], l[3]]; }),
        thumbs: p.querySelectorAll('.hav-thumb').length,
        thumbsDrawn: p.querySelectorAll('.hav-thumb[data-drawn="1"]').length,
        matrixTitle: title && title.offsetParent !== null ? title.textContent : null,
        heatmap: (function (c) { return c ? c.dataset.zoom : null; })(
          p.querySelector('.hav-matrix-view canvas.hav-heatmap')),
        bands: p.querySelectorAll('.hav-matrix-view polygon.hav-band').length,
        globals: p.querySelectorAll('.hav-matrix-view rect.hav-global').length,
        svBars: p.querySelectorAll('.hav-matrix-view svg.hav-svchart rect').length,
        zeroSlot: p.querySelectorAll('.hav-matrix-view canvas.hav-zero').length
      });
    });
    return s;
  }
  function fire(el, type) {
    var r = el.getBoundingClientRect();
    el.dispatchEvent(new MouseEvent(type, {bubbles: true, clientX: r.left + r.width / 2,
                                           clientY: r.top + r.height / 2}));
  }
  function finish(out) {
    out.errors = window.__havErrors;
    var pre = document.createElement('pre');
    pre.id = 'hav-test-result';
    pre.style.display = 'none';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
    document.title = 'hav-done';
  }
  var out = {steps: [], loadedMs: null};
  var root = document.querySelector('.hav-root');
  if (!root || !root.hav) { out.fatal = 'the viewer did not mount'; finish(out); return; }
  root.hav.idle().then(function () {
    out.firstRenderMs = performance.now();
    out.timings = root.hav.timings;
    out.initial = snapshot(root);
    var chain = Promise.resolve();
    STEPS.forEach(function (step) {
      chain = chain.then(function () {
        if (step.click) { pick(step, 'click').click(); }
        else if (step.dblclick) { pick(step, 'dblclick').dispatchEvent(new MouseEvent('dblclick', {bubbles: true})); }
        else if (step.hover) { fire(pick(step, 'hover'), 'mousemove'); }
        else if (step.select) {
          var sel = pick(step, 'select');
          sel.value = String(step.value);
          sel.dispatchEvent(new Event('change', {bubbles: true}));
        }
        return root.hav.idle();
      }).then(function () { out.steps.push(snapshot(root)); });
    });
    return chain;
  }).catch(function (e) { out.fatal = String(e && e.stack || e); }).then(function () { finish(out); });
})();</script>"""


def find_chromium() -> str | None:
    """The path of a Chromium/Chrome binary ($CHROMIUM first), or None."""
    env = os.environ.get("CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    return next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)


def instrument(page_html: str, steps: list[dict]) -> str:
    """The page with the error recorder at the top of <head> and the step runner before </body>."""
    steps_json = json.dumps(steps).replace("<", "\\u003c")
    if "<head>" not in page_html or "</body>" not in page_html:
        raise ValueError("page_html must be a whole page (viewer.page): it has no <head> or </body>")
    page_html = page_html.replace("<head>", "<head>" + _ERRORS_JS, 1)
    head, _, tail = page_html.rpartition("</body>")
    return head + _STEPS_JS % steps_json + "</body>" + tail


def _chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary: apt-get install chromium (or set $CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="hav-chromium-") as profile:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)


def console_errors(stderr: str) -> list[str]:
    """Console messages of level error from Chromium's log (uncaught exceptions, failed loads)."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or ":ERROR:" in line
                                                                         or "Failed to load" in line)]


def run_steps(page_html: str, steps: list[dict] | None = None, *, screenshot: str | os.PathLike | None = None,
              window: tuple[int, int] = (1400, 900), budget_ms: int = 30000, timeout: float = 180) -> dict:
    """Load the page in headless Chromium (network off), run the steps, return
    ``{"initial": snapshot, "steps": [snapshot per step], "errors": [...], "console": [...],
    "firstRenderMs": ...}``; also save a PNG of the final state when ``screenshot`` is given."""
    steps = steps or []
    with tempfile.TemporaryDirectory(prefix="hav-page-") as tmp:
        path = Path(tmp) / "page.html"
        path.write_text(instrument(page_html, steps), encoding="utf-8")
        url = path.resolve().as_uri()
        common = [f"--virtual-time-budget={budget_ms}", f"--window-size={window[0]},{window[1]}"]
        proc = _chromium([*common, "--dump-dom", url], timeout)
        match = re.search(r'<pre id="hav-test-result"[^>]*>(.*?)</pre>', proc.stdout, re.S)
        if match is None:
            raise RuntimeError(f"the page did not finish its steps (rc={proc.returncode}); chromium said:\n"
                               + proc.stderr[-3000:])
        result = json.loads(html.unescape(match.group(1)))
        result["console"] = console_errors(proc.stderr)
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            shot.parent.mkdir(parents=True, exist_ok=True)
            tmp_png = Path(tmp) / "shot.png"
            proc = _chromium([*common, f"--screenshot={tmp_png}", url], timeout)
            if not tmp_png.exists():
                raise RuntimeError(f"chromium wrote no screenshot (rc={proc.returncode}):\n" + proc.stderr[-3000:])
            shutil.move(str(tmp_png), shot)
            result["console"] += console_errors(proc.stderr)
    return result


class _Pipe:
    """Chrome DevTools Protocol over --remote-debugging-pipe (fd 3: commands in, fd 4: replies out)."""

    def __init__(self, args: list[str]):
        binary = find_chromium()
        if binary is None:
            raise FileNotFoundError("no chromium binary: apt-get install chromium (or set $CHROMIUM)")
        self.profile = tempfile.TemporaryDirectory(prefix="hav-chromium-")
        cmd_r, self.cmd_w = os.pipe()
        self.out_r, out_w = os.pipe()

        def child_fds():
            os.dup2(cmd_r, 3)
            os.dup2(out_w, 4)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile.name}",
                                      "--remote-debugging-pipe", *args], preexec_fn=child_fds, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(out_w)
        self.buffer, self.next_id = b"", 0

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                chunk = os.read(self.out_r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe during {method}")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for fd in (self.cmd_w, self.out_r):
            os.close(fd)
        self.profile.cleanup()


def run_steps_real_time(page_html: str, steps: list[dict] | None = None, *,
                        window: tuple[int, int] = (1400, 900)) -> dict:
    """``run_steps`` without virtual time, driven over the DevTools pipe: the page's
    ``performance.now()`` readings (firstRenderMs, renderMs) are wall-clock milliseconds."""
    with tempfile.TemporaryDirectory(prefix="hav-page-") as tmp:
        path = Path(tmp) / "page.html"
        path.write_text(instrument(page_html, steps or []), encoding="utf-8")
        pipe = _Pipe([f"--window-size={window[0]},{window[1]}", "about:blank"])
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            pipe.call("Page.enable", session=session)
            pipe.call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
            wait = ("new Promise(function (done) { (function poll() { var e = document.getElementById("
                    "'hav-test-result'); if (e) { done(e.textContent); } else { setTimeout(poll, 10); } })(); })")
            value = pipe.call("Runtime.evaluate", {"expression": wait, "awaitPromise": True, "returnByValue": True},
                              session=session)["result"]["value"]
        finally:
            pipe.close()
    result = json.loads(value)
    result["console"] = []
    return result


class Browser:
    """A page in headless Chromium driven over the DevTools protocol (no virtual time), with REAL input:
    ``Input.dispatchMouseEvent`` / ``dispatchKeyEvent`` go through the browser's hit testing and event
    dispatch exactly as a user's mouse and keyboard do (mousemove, mouseleave, click, wheel, focus).

    ``with Browser(page_html) as b: b.click(".hav-tab-matrix"); b.painted()``. ``timed(action)`` runs an
    action and returns the milliseconds from just before the input was sent until the viewer was idle and
    two animation frames had passed (the result painted on screen)."""

    def __init__(self, page_html: str, *, window: tuple[int, int] = (1400, 900)):
        self.tmp = tempfile.TemporaryDirectory(prefix="hav-page-")
        path = Path(self.tmp.name) / "page.html"
        if "<head>" not in page_html:
            raise ValueError("page_html must be a whole page (viewer.page): it has no <head>")
        path.write_text(page_html.replace("<head>", "<head>" + _ERRORS_JS, 1), encoding="utf-8")
        self.pipe = _Pipe([f"--window-size={window[0]},{window[1]}", "about:blank"])
        try:
            target = self.pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.call("Page.enable")
            self.call("Emulation.setDeviceMetricsOverride", {"width": window[0], "height": window[1],
                                                             "deviceScaleFactor": 1, "mobile": False})
            self.call("Page.navigate", {"url": path.resolve().as_uri()})
            self.first_render_ms = self.evaluate(
                "new Promise(function (done) { (function poll() { var r = document.querySelector('.hav-root');"
                " if (r && r.hav) { r.hav.painted().then(function () { done(performance.now()); }); }"
                " else if (r && r.dataset.error) { done(-1); } else { setTimeout(poll, 5); } })(); })")
        except BaseException:
            self.close()
            raise
        self.x = self.y = 0.0

    def call(self, method: str, params: dict | None = None) -> dict:
        return self.pipe.call(method, params, session=self.session)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        reply = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                               "returnByValue": True})
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression[:200]}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def center(self, css: str, index: int = 0, panel: int | None = None) -> tuple[float, float]:
        """The centre of the n-th element matching css (inside panel m), scrolled into view first."""
        scope = "document" if panel is None else f"document.querySelectorAll('.hav-panel')[{panel}]"
        box = self.evaluate(f"(function () {{ var e = {scope}.querySelectorAll({json.dumps(css)})[{index}];"
                            " if (!e) { return null; } e.scrollIntoView({block: 'nearest'});"
                            " var r = e.getBoundingClientRect();"
                            " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        if box is None:
            raise RuntimeError(f"no element {css} [{index}]")
        return box[0], box[1]

    def move(self, x: float, y: float, steps: int = 1, buttons: int = 0) -> None:
        """mouseMoved events along the straight line from the last position to (x, y)."""
        x0, y0 = self.x, self.y
        for k in range(1, steps + 1):
            self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x0 + (x - x0) * k / steps,
                                                   "y": y0 + (y - y0) * k / steps, "buttons": buttons})
        self.x, self.y = x, y

    def hover(self, css: str, index: int = 0, panel: int | None = None) -> None:
        self.move(*self.center(css, index, panel), steps=3)

    def press(self, x: float, y: float, count: int = 1) -> None:
        self.move(x, y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                   "buttons": 1 if kind == "mousePressed" else 0,
                                                   "clickCount": count})

    def click(self, css: str, index: int = 0, panel: int | None = None, count: int = 1) -> None:
        self.press(*self.center(css, index, panel), count=count)

    def click_at(self, x: float, y: float) -> None:
        self.press(x, y)

    def drag(self, x0: float, y0: float, x1: float, y1: float, steps: int = 5) -> None:
        self.move(x0, y0)
        self.call("Input.dispatchMouseEvent", {"type": "mousePressed", "x": x0, "y": y0, "button": "left",
                                               "buttons": 1, "clickCount": 1})
        self.move(x1, y1, steps=steps, buttons=1)
        self.call("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": x1, "y": y1, "button": "left",
                                               "buttons": 0, "clickCount": 1})

    def wheel(self, x: float, y: float, delta_y: float) -> None:
        self.move(x, y)
        self.call("Input.dispatchMouseEvent", {"type": "mouseWheel", "x": x, "y": y, "deltaX": 0,
                                               "deltaY": delta_y})

    def key(self, key: str) -> None:
        """A key press (keyDown with its text for printable keys, then keyUp)."""
        codes = {"ArrowUp": 38, "ArrowDown": 40, "ArrowLeft": 37, "ArrowRight": 39}
        code = codes.get(key, ord(key.upper()) if len(key) == 1 else 0)
        down = {"type": "keyDown", "key": key, "windowsVirtualKeyCode": code,
                "code": key if key in codes else (f"Digit{key}" if key.isdigit() else f"Key{key.upper()}")}
        if len(key) == 1:
            down["text"] = key
        self.call("Input.dispatchKeyEvent", down)
        self.call("Input.dispatchKeyEvent", {**down, "type": "keyUp", "text": ""})

    def painted(self) -> None:
        self.evaluate("document.querySelector('.hav-root').hav.painted().then(function () { return 1; })")

    def timed(self, action) -> float:
        """Milliseconds (page clock) from just before ``action()`` sends its input to the result painted."""
        t0 = self.evaluate("performance.now()")
        action()
        return self.evaluate("document.querySelector('.hav-root').hav.painted().then(function () {"
                             " return performance.now(); })") - t0

    def screenshot(self, path: str | os.PathLike) -> Path:
        """A PNG of the viewport, written via a temporary file then renamed."""
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(base64.b64decode(data))
        os.replace(tmp, path)
        return path

    def errors(self) -> list[str]:
        return self.evaluate("window.__havErrors") or []

    def close(self) -> None:
        if getattr(self, "pipe", None) is not None:
            self.pipe.close()
            self.pipe = None
        self.tmp.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
