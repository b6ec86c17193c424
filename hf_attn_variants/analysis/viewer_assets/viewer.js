/* hf-attn-variants attention viewer: head, model, matrix, difference (compare mode) and attribution views.
   Self-contained (no network). HAV.mount(root) reads the JSON in root's <script class="hav-data">.
   Matrices are decoded lazily (one (layer, head) at a time, cached), thumbnails are precomputed.
   Only what is on screen is drawn: the head view's canvas is the size of its viewport (lines of the
   rows in view) and its token rows are virtual (only those in view exist), the matrix view draws the
   zoomed window of a T x T image onto a fixed-size canvas, the model view is one canvas per model. */
(function () {
  'use strict';
  var HAV = window.HAV = window.HAV || {};
  if (HAV.mount) { return; }

  var ROW = 20;                 // px per token row in the head view
  var LINE_MIN = 0.01;          // overview lines below this weight (on the head's scale) are not drawn
  var PREFETCH_LANES = 2;       // background decodes in flight at once after a render
  var LINE_BUDGET = 1500;       // the most overview lines drawn at once (the strongest first)
  var DIFF_FIRST = 6;           // A - B view: cards drawn before it shows (the rest as they scroll into view)
  var DIFF_KEEP = 12;           // A - B maps kept (pooled images, and the two matrices each for the tooltip)
  var ROW_SLACK = 15;           // head view: token rows kept as elements above and below the rows in view
  var COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f',
                '#bcbd22', '#17becf', '#393b79', '#637939', '#8c6d31', '#843c39', '#7b4173', '#3182bd'];
  var LABEL_LEFT = 96, LABEL_TOP = 72;  // matrix view: room for the token labels
  var SEGMENTS = {all: 'all', AA: 'A\u2192A', AB: 'A\u2192B', BA: 'B\u2192A', BB: 'B\u2192B'};

  function headColor(h) { return COLORS[h % COLORS.length]; }

  // ------------------------------------------------------------------ decoding
  var HALF = null;
  function halfTable() {
    if (HALF) { return HALF; }
    HALF = new Float32Array(65536);
    for (var u = 0; u < 65536; u++) {
      var s = (u & 0x8000) ? -1 : 1, e = (u >> 10) & 0x1f, m = u & 0x3ff;
      HALF[u] = e === 0 ? s * m * Math.pow(2, -24) : e === 31 ? (m ? NaN : s * Infinity)
        : s * (1 + m / 1024) * Math.pow(2, e - 15);
    }
    return HALF;
  }
  function b64bytes(text) {
    var bin = atob(text), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out;
  }
  function inflate(bytes) {
    if (typeof DecompressionStream === 'undefined') {
      return Promise.reject(new Error('this browser has no DecompressionStream: write the page without --compress'));
    }
    // the bytes written straight into the stream (a Blob's stream() takes about twice as long per matrix)
    var ds = new DecompressionStream('deflate'), w = ds.writable.getWriter();
    w.write(bytes).catch(function () {});
    w.close().catch(function () {});
    return new Response(ds.readable).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }
  function toFloats(bytes, precision, valueMax) {
    if (precision === 'uint8') {  // u = round(255 sqrt(w / valueMax)); the largest weight comes with the pass
      var q = new Float32Array(256), f = new Float32Array(bytes.length), top = 0;
      for (var k = 0; k < 256; k++) { q[k] = (k / 255) * (k / 255) * valueMax; }
      for (var n = 0; n < bytes.length; n++) { var u = bytes[n]; f[n] = q[u]; if (u > top) { top = u; } }
      f.max = q[top];
      return f;
    }
    if (precision === 'float32') { return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4); }
    var lut = halfTable(), u16 = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
    var out = new Float32Array(u16.length);
    for (var i = 0; i < u16.length; i++) { out[i] = lut[u16[i]]; }
    return out;
  }
  function decode(text, model, layer) {
    var bytes = b64bytes(text), vmax = layer.value_max || 1;
    if (model.encoding === 'zlib+base64') {
      return inflate(bytes).then(function (b) { return toFloats(b, model.precision, vmax); });
    }
    return Promise.resolve(toFloats(bytes, model.precision, vmax));
  }


  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c];
    });
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function fmt(x, d) { return (x === null || x === undefined || isNaN(x)) ? 'n/a' : Number(x).toFixed(d); }
  function signed(x, d) { return (x === null || x === undefined || isNaN(x)) ? 'n/a' : (x > 0 ? '+' : '') + Number(x).toFixed(d); }
  function maxOf(A) { var m = 0; for (var i = 0; i < A.length; i++) { if (A[i] > m) { m = A[i]; } } return m; }
  function twoFrames() {
    return new Promise(function (r) { requestAnimationFrame(function () { requestAnimationFrame(function () { r(); }); }); });
  }

  // colour maps: weights white -> blue -> dark purple on sqrt(x), x in [0, 1]; differences red (+) / blue (-)
  function heatColor(x, out, o) {
    x = Math.sqrt(x > 1 ? 1 : x < 0 ? 0 : x);
    out[o] = 255 - 230 * x; out[o + 1] = 255 - 200 * x; out[o + 2] = 255 - 90 * x; out[o + 3] = 255;
  }
  function diffColor(x, out, o) {
    var a = Math.sqrt(Math.min(1, Math.abs(x)));
    if (x >= 0) { out[o] = 255 - 40 * a; out[o + 1] = 255 - 215 * a; out[o + 2] = 255 - 215 * a; }
    else { out[o] = 255 - 215 * a; out[o + 1] = 255 - 150 * a; out[o + 2] = 255 - 40 * a; }
    out[o + 3] = 255;
  }

  var DIFF_PIXELS = 256;
  /** The pooling factor of an A - B map of nr x nc cells: 1 up to DIFF_PIXELS a side. */
  function diffPool(nr, nc) { return Math.max(1, Math.ceil(Math.max(nr, nc) / DIFF_PIXELS)); }

  function segmentRange(m, seg, axis) {  // axis 0: rows (queries), 1: columns (keys) -> [lo, hi)
    var T = m.length, p = m.pair_start;
    if (seg === 'all' || p === null || p === undefined) { return [0, T]; }
    var c = seg.charAt(axis);
    return c === 'A' ? [0, p] : [p, T];
  }

  // ------------------------------------------------------------------ one viewer
  function Viewer(root, data) {
    this.root = root;
    this.data = data;
    this.models = data.models;
    this.cache = new Map();
    this.pending = 0;
    this.renders = 0;
    this.waiters = [];
    this.compare = data.compare || null;
    var T = this.models[0].length;  // decoded matrices kept: about 256 MB of floats, 36 to 256 of them
    this.cacheLimit = Math.max(36, Math.min(256, Math.floor(268435456 / (4 * T * T))));
    this.viewNames = ['head', 'model', 'matrix'];
    if (this.compare) { this.viewNames.push('diff'); }
    this.viewNames.push('attribution');
    var maxHeads = this.models[0].layers[0] ? this.models[0].layers[0].heads : 0, heads = [];
    for (var h = 0; h < maxHeads; h++) { heads.push(h); }
    this.state = {view: 'head', layer: 0, heads: new Set(heads), matrixHead: 0, token: null, side: 'left',
                  shared: false, zoom: null, segment: 'all', diffAll: false};
    this.build();
  }

  Viewer.prototype.numLayers = function () {
    return Math.max.apply(null, this.models.map(function (m) { return m.layers.length; }));
  };

  Viewer.prototype.decodeCached = function (key, text, m, vmax) {
    var self = this;
    if (this.cache.has(key)) { return this.cache.get(key); }
    var p = decode(text, m, {value_max: vmax}).then(function (A) {
      if (A.max === undefined) { A.max = maxOf(A); }
      return A;
    });
    this.cache.set(key, p);
    if (this.cache.size > this.cacheLimit) { this.cache.delete(this.cache.keys().next().value); }
    p.catch(function () { self.cache.delete(key); });
    return p;
  };
  Viewer.prototype.matrix = function (mi, layer, head) {
    var L = this.models[mi].layers[layer];
    return this.decodeCached(mi + ':' + layer + ':' + head, L.attention[head], this.models[mi], L.value_max);
  };
  Viewer.prototype.rollout = function (mi, layer) {
    var m = this.models[mi];
    return this.decodeCached(mi + ':rollout:' + layer, m.rollout[layer], m, 1);
  };

  Viewer.prototype.build = function () {
    var self = this, root = this.root;
    root.tabIndex = 0;
    var bar = el('div', 'hav-bar');
    bar.appendChild(el('span', 'hav-title', this.data.title || 'attention'));
    this.tabs = {};
    this.viewNames.forEach(function (v) {
      var b = el('button', 'hav-tab hav-tab-' + v, v === 'diff' ? 'A \u2212 B' : v + ' view');
      b.type = 'button';
      b.addEventListener('click', function () { self.set({view: v}); });
      self.tabs[v] = b;
      bar.appendChild(b);
    });
    var lab = el('label', null, 'Layer ');
    this.layerSelect = el('select', 'hav-layer');
    for (var l = 0; l < this.numLayers(); l++) {
      var o = el('option', null, String(l));
      o.value = String(l);
      this.layerSelect.appendChild(o);
    }
    this.layerSelect.addEventListener('change', function () {
      self.set({layer: Number(self.layerSelect.value), token: null});
    });
    lab.appendChild(this.layerSelect);
    bar.appendChild(lab);
    var shared = el('label', 'hav-shared-label', ' shared colour scale');
    this.sharedBox = el('input', 'hav-shared');
    this.sharedBox.type = 'checkbox';
    this.sharedBox.title = 'off: each head on its own scale (0 to its largest weight); on: one scale for all';
    this.sharedBox.addEventListener('change', function () { self.set({shared: self.sharedBox.checked}); });
    shared.insertBefore(this.sharedBox, shared.firstChild);
    bar.appendChild(shared);
    var png = el('button', 'hav-export-png', 'PNG');
    png.type = 'button';
    png.title = 'save the current view as a PNG';
    png.addEventListener('click', function () { self.exportPng(); });
    bar.appendChild(png);
    bar.appendChild(el('span', 'hav-note',
      'click a head box to toggle it (double-click: only it), a token to see its attention; keys: \u2190\u2191\u2192\u2193 ' +
      'move the selected token, 0-9 pick a layer'));
    root.appendChild(bar);
    this.notices = el('div', 'hav-notices');
    this.models.forEach(function (m) {
      if (m.truncated) {
        self.notices.appendChild(el('div', 'hav-notice hav-truncated', m.name + ': the text has ' + m.truncated.from +
          ' tokens, more than the ' + m.truncated.limit + ' this page keeps (--max-length); it was truncated to ' +
          m.truncated.to + ' tokens.'));
      }
    });
    root.appendChild(this.notices);
    var panels = el('div', 'hav-panels' + (this.models.length > 1 ? ' hav-compare' : ''));
    this.panels = this.models.map(function (m, mi) {
      var p = new Panel(self, mi);
      panels.appendChild(p.el);
      return p;
    });
    root.appendChild(panels);
    this.diffBox = el('div', 'hav-view hav-diff-view');
    root.appendChild(this.diffBox);
    this.tip = el('div', 'hav-tip');
    root.appendChild(this.tip);
    // the tooltip: shown by the element under the pointer on every move, hidden otherwise (a render replaces
    // the hovered element, so its own mouseleave may never come)
    root.addEventListener('mousemove', function (ev) { if (!ev.havTip) { self.hideTip(); } });
    root.addEventListener('mouseleave', function () { self.hideTip(); });
    window.addEventListener('scroll', function () { self.hideTip(); }, true);
    window.addEventListener('blur', function () { self.hideTip(); });
    root.addEventListener('keydown', function (ev) { self.onKey(ev); });
    this.render();
  };

  Viewer.prototype.onKey = function (ev) {
    if (ev.target && /^(SELECT|INPUT|TEXTAREA)$/.test(ev.target.tagName)) { return; }
    var s = this.state, T = this.models[0].length;
    if (/^[0-9]$/.test(ev.key)) {
      var l = Number(ev.key);
      if (l < this.numLayers()) { this.set({layer: l, token: s.view === 'head' ? s.token : s.token}); }
      ev.preventDefault();
      return;
    }
    var step = {ArrowUp: -1, ArrowLeft: -1, ArrowDown: 1, ArrowRight: 1}[ev.key];
    if (!step) { return; }
    ev.preventDefault();
    var t = s.token === null ? (step > 0 ? 0 : T - 1) : Math.max(0, Math.min(T - 1, s.token + step));
    this.set({token: t, side: s.side || 'left'});
    this.panels.forEach(function (p) { p.scrollToToken(t); });
  };

  Viewer.prototype.set = function (patch) {
    var s = this.state;
    Object.keys(patch).forEach(function (k) { s[k] = patch[k]; });
    this.render();
  };

  Viewer.prototype.render = function () {
    var self = this, s = this.state;
    this.hideTip();
    this.viewNames.forEach(function (v) { self.tabs[v].classList.toggle('hav-active', v === s.view); });
    this.layerSelect.value = String(s.layer);
    this.sharedBox.checked = !!s.shared;
    this.root.dataset.view = s.view;
    this.root.dataset.layer = String(s.layer);
    this.pending++;
    this.root.dataset.ready = '0';
    var t0 = performance.now(), work;
    this.diffBox.classList.toggle('hav-shown', s.view === 'diff');
    if (s.view === 'diff') {
      this.panels.forEach(function (p) { p.el.style.display = 'none'; });
      work = this.renderDiff();
    } else {
      this.panels.forEach(function (p) { p.el.style.display = ''; });
      work = Promise.all(this.panels.map(function (p) { return p.render(); }));
    }
    work.then(function () {
      self.lastRenderMs = performance.now() - t0;
      self.schedulePrefetch();
      self.prebuild();
    }, function (err) {
      self.root.dataset.error = String(err && err.message || err);
      if (window.console) { console.error(err); }
    }).then(function () {
      self.pending--;
      self.renders++;
      self.root.dataset.renders = String(self.renders);
      if (self.pending === 0) {
        self.root.dataset.ready = '1';
        var w = self.waiters;
        self.waiters = [];
        w.forEach(function (f) { f(); });
      }
    });
  };

  /** After a render, decode in the background what the next input most likely needs: the heads on screen in
      the layers above and below (a layer switch then only draws). One matrix per task, so input stays first. */
  Viewer.prototype.schedulePrefetch = function () {
    var self = this, s = this.state, todo = [], token = (this.prefetchToken = (this.prefetchToken || 0) + 1);
    if (s.view !== 'head' && s.view !== 'matrix') { return; }
    var heads = s.view === 'head' ? Array.from(s.heads) : [s.matrixHead];
    [s.layer + 1, s.layer - 1].forEach(function (l) {
      self.models.forEach(function (m, mi) {
        if (l < 0 || l >= m.layers.length) { return; }
        heads.forEach(function (h) { if (h < m.layers[l].heads) { todo.push([mi, l, h]); } });
      });
    });
    if (todo.length * 2 > this.cacheLimit) { return; }
    // 50 ms after the render (the page first shows only what it decoded), two decodes in flight (inflation
    // runs off the main thread), so that a layer switch soon after finds its matrices decoded or on the way
    var next = function () {
      if (token !== self.prefetchToken || !todo.length) { return; }
      var t = todo.shift();
      self.matrix(t[0], t[1], t[2]).then(function () { setTimeout(next, 0); }, function () {});
    };
    for (var k = 0; k < PREFETCH_LANES; k++) { setTimeout(next, 50); }
  };

  /** Once, after the first render, when the page is idle: build each panel's model view (its grid of cells) and
      draw its thumbnails onto the grid's canvas, one step per idle task, so that opening the model view only shows
      them. What is drawn is the same as drawing them on the first open. */
  Viewer.prototype.prebuild = function () {
    if (this.prebuilt) { return; }
    this.prebuilt = true;
    var self = this, later = window.requestIdleCallback || function (f) { return setTimeout(f, 50); }, todo = [];
    this.panels.forEach(function (p) {
      todo.push(function () { p.buildModelView(); });
      todo.push(function () { p.drawThumbs(); });
    });
    // compare mode: the A - B view's first maps (the 12 heads that changed most, whole text, own scale), so that
    // opening it only puts them on its canvases
    var change = this.compare && this.compare.change && this.compare.change.all, order = [];
    if (change && this.models[0].length === this.models[1].length) {
      change.forEach(function (row, l) { row.forEach(function (c, h) { order.push([c, l, h]); }); });
      order.sort(function (x, y) { return y[0] - x[0]; });
      var T = this.models[0].length;
      order.slice(0, DIFF_KEEP).forEach(function (o) {
        todo.push(function () { return self.diffImage(o[1], o[2], [0, T], [0, T], false).catch(function () {}); });
      });
    }
    var step = function () {  // one step per idle period; a step that returns a promise is waited for
      if (!todo.length) { return; }
      Promise.resolve(todo.shift()()).then(function () { later(step); });
    };
    later(step);
  };

  /** A promise resolved once every render started so far has finished (for tests and scripts). */
  Viewer.prototype.idle = function () {
    var self = this;
    return this.pending === 0 ? Promise.resolve() : new Promise(function (r) { self.waiters.push(r); });
  };
  /** idle, then two animation frames: the result is on screen (painted). */
  Viewer.prototype.painted = function () { return this.idle().then(twoFrames); };

  Viewer.prototype.metricValue = function (mi, layer, head, key) {
    var L = this.models[mi].layers[layer];
    return L && L.metrics[key] ? L.metrics[key][head] : NaN;
  };
  /** A head's metric on a segment filter's block of a text pair (the page's compare.segment_metrics), or over the
      whole text for "all"; NaN where the block has no weight (a causal model's A->B) or the page has none. */
  Viewer.prototype.segmentMetric = function (mi, layer, head, key, seg) {
    var sm = this.compare && this.compare.segment_metrics;
    if (!seg || seg === 'all' || !sm || !sm[mi] || !sm[mi][seg]) { return this.metricValue(mi, layer, head, key); }
    var L = sm[mi][seg][layer], x = L && L[key] ? L[key][head] : null;
    return x === null || x === undefined ? NaN : x;
  };
  /** "mass within w" reads 1 for every head when no pair of tokens is farther apart than w: say so. */
  Viewer.prototype.windowText = function (mi, layer, head) {
    var m = this.models[mi], w = m.metric_window;
    if (m.length - 1 <= w) { return 'n/a (T=' + m.length + ' \u2264 w+1: every pair is within w)'; }
    return fmt(this.metricValue(mi, layer, head, 'mass_within_' + w), 3);
  };
  Viewer.prototype.metricsText = function (mi, layer, head) {
    var m = this.models[mi], L = m.layers[layer], self = this;
    if (!L) { return ''; }
    var g = function (k) { return self.metricValue(mi, layer, head, k); };
    var w = m.metric_window;
    return 'layer ' + layer + ' \u00b7 ' + L.head_names[head] + ' \u00b7 ' + L.variant + '\n' +
      'entropy        ' + fmt(g('entropy'), 3) + ' nats (uniform ' + fmt(g('uniform_entropy'), 3) + ')\n' +
      'mean distance  ' + fmt(g('mean_distance'), 2) + ' tokens\n' +
      'sink mass      ' + fmt(g('sink_mass'), 3) + '\n' +
      'mass within ' + w + (String(w).length < 2 ? '  ' : ' ') + this.windowText(mi, layer, head) + '\n' +
      'prev / next    ' + fmt(g('prev_token'), 3) + ' / ' + fmt(g('next_token'), 3);
  };

  Viewer.prototype.showTip = function (ev, text) {
    ev.havTip = true;
    this.tip.textContent = text;
    this.tip.style.display = 'block';
    var x = ev.clientX + 14, y = ev.clientY + 14;
    if (x + 330 > window.innerWidth) { x = Math.max(0, ev.clientX - 330); }
    this.tip.style.left = x + 'px';
    this.tip.style.top = y + 'px';
  };
  Viewer.prototype.hideTip = function () { if (this.tip) { this.tip.style.display = 'none'; } };
  Viewer.prototype.hoverMetrics = function (node, mi, layerFn, head) {
    var self = this;
    node.addEventListener('mousemove', function (ev) { self.showTip(ev, self.metricsText(mi, layerFn(), head)); });
    node.addEventListener('mouseleave', function () { self.hideTip(); });
  };

  // ---- export
  Viewer.prototype.download = function (name, blob, record) {
    this.lastExport = record;
    var url = URL.createObjectURL(blob), a = el('a');
    a.href = url;  // a blob: URL made here (the page loads nothing)
    a.download = name;
    a.style.display = 'none';
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(url); a.remove(); }, 1000);
  };

  /** A PNG of what the current view shows on screen: its canvases and token labels, at their places. */
  Viewer.prototype.exportPng = function () {
    var self = this, box = this.root.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    var vw = window.innerWidth, vh = window.innerHeight;
    var x0 = Math.max(0, box.left), y0 = Math.max(0, box.top);
    var W = Math.max(1, Math.min(vw, box.right) - x0), H = Math.max(1, Math.min(vh, box.bottom) - y0);
    var c = el('canvas');
    c.width = Math.round(W * dpr); c.height = Math.round(H * dpr);
    var ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, W, H);
    ctx.imageSmoothingEnabled = false;
    var visible = function (e) { var r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 &&
      r.bottom > 0 && r.top < vh && r.right > 0 && r.left < vw ? r : null; };
    this.root.querySelectorAll('.hav-shown canvas, .hav-diff-view.hav-shown canvas').forEach(function (cv) {
      var r = visible(cv);
      if (r) { ctx.drawImage(cv, r.left - x0, r.top - y0, r.width, r.height); }
    });
    ctx.font = '12px ui-monospace, Menlo, Consolas, monospace';
    ctx.textBaseline = 'middle';
    this.root.querySelectorAll('.hav-shown .hav-tok, .hav-title, .hav-panel-title, .hav-matrix-title').forEach(
      function (t) {
        var r = visible(t);
        if (!r) { return; }
        if (t.classList.contains('hav-selected')) { ctx.fillStyle = '#ffd33d'; ctx.fillRect(r.left - x0, r.top - y0, r.width, r.height); }
        else if (t.style.background) { ctx.fillStyle = t.style.background; ctx.fillRect(r.left - x0, r.top - y0, r.width, r.height); }
        ctx.fillStyle = '#1f2328';
        var right = t.parentNode && t.parentNode.classList.contains('hav-left');
        ctx.textAlign = right ? 'right' : 'left';
        ctx.fillText(t.textContent, right ? r.right - x0 - 4 : r.left - x0 + 4, r.top - y0 + r.height / 2, r.width - 6);
      });
    var name = 'attention-' + this.state.view + '-layer' + this.state.layer + '.png';
    var url = c.toDataURL('image/png');
    var bytes = b64bytes(url.split(',')[1]);
    this.download(name, new Blob([bytes], {type: 'image/png'}), {name: name, type: 'png', width: c.width,
      height: c.height, dataUrl: url});
    return this.lastExport;
  };

  /** CSV of one head's (T, T) matrix: first row the key tokens, first column the query tokens. */
  Viewer.prototype.exportCsv = function (mi, layer, head) {
    var self = this, m = this.models[mi];
    return this.matrix(mi, layer, head).then(function (A) {
      var T = m.length, q = function (s) { return '"' + String(s).replace(/"/g, '""') + '"'; };
      var lines = ['query\\key,' + m.tokens.map(function (t, j) { return q(j + ':' + t); }).join(',')];
      for (var i = 0; i < T; i++) {
        var row = [q(i + ':' + m.tokens[i])];
        for (var j = 0; j < T; j++) { row.push(String(A[i * T + j])); }
        lines.push(row.join(','));
      }
      var text = lines.join('\n') + '\n', name = (m.name || 'model').replace(/[^A-Za-z0-9._-]+/g, '_') +
        '-layer' + layer + '-head' + head + '.csv';
      self.download(name, new Blob([text], {type: 'text/csv'}), {name: name, type: 'csv', text: text});
      return self.lastExport;
    });
  };

  // ---- A - B (compare mode)
  Viewer.prototype.renderDiff = function () {
    var self = this, s = this.state, box = this.diffBox, a = this.models[0], b = this.models[1];
    var focused = document.activeElement && box.contains(document.activeElement) &&
      document.activeElement.classList.contains('hav-segment');  // the new select keeps the keyboard
    box.textContent = '';
    if (a.length !== b.length) {
      box.appendChild(el('div', 'hav-note', 'the two models tokenised the text differently (' + a.length + ' vs ' +
        b.length + ' tokens): no A \u2212 B'));
      return Promise.resolve();
    }
    var head = el('div', 'hav-diff-bar');
    head.appendChild(el('span', 'hav-diff-legend', 'A = ' + a.name + ', B = ' + b.name + ': per head A \u2212 B ' +
      '(red: A attends more, blue: B more), heads ordered by change = mean over query rows of \u00bd\u2211|A\u2212B| ' +
      '(total variation, 0 to 1); metric deltas are A \u2212 B ' + (s.segment === 'all' ? 'over the whole text.' :
      'on the ' + SEGMENTS[s.segment] + ' block (each query row of it restricted to its keys, renormalised).')));
    var sel = null;
    if (a.pair_start !== null && a.pair_start !== undefined) {
      var lab = el('label', null, ' segments ');
      sel = el('select', 'hav-segment');
      Object.keys(SEGMENTS).forEach(function (k) {
        var o = el('option', null, SEGMENTS[k]);
        o.value = k;
        sel.appendChild(o);
      });
      sel.value = s.segment;
      sel.addEventListener('change', function () { self.set({segment: sel.value}); });
      lab.appendChild(sel);
      head.appendChild(lab);
    }
    box.appendChild(head);
    if (focused && sel) { sel.focus(); }
    var change = this.compare.change[s.segment] || this.compare.change.all, order = [];
    change.forEach(function (row, l) { row.forEach(function (c, h) { order.push([c, l, h]); }); });
    order.sort(function (x, y) { return y[0] - x[0]; });
    var shown = s.diffAll ? order : order.slice(0, 12), first = DIFF_FIRST;
    var grid = el('div', 'hav-diff-grid');
    box.appendChild(grid);
    if (!s.diffAll && order.length > shown.length) {
      var more = el('button', 'hav-diff-more', 'show all ' + order.length + ' heads');
      more.type = 'button';
      more.addEventListener('click', function () { self.set({diffAll: true}); });
      box.appendChild(more);
    }
    var rows = segmentRange(a, s.segment, 0), cols = segmentRange(a, s.segment, 1);
    var cards = shown.map(function (o, rank) { return self.diffCard(grid, o[1], o[2], o[0], rank, rows, cols); });
    // the cards in the window (at least DIFF_FIRST) are drawn before the view counts as shown; the rest as they
    // scroll into view
    var vh = window.innerHeight || 900;
    while (first < cards.length && cards[first].canvas.getBoundingClientRect().top < vh) { first++; }
    this.root.dataset.diffFirst = String(first);
    return Promise.all(cards.slice(0, first).map(function (c) { return c.draw(); })).then(function () {
      if (cards.length > first && typeof IntersectionObserver !== 'undefined') {
        var io = new IntersectionObserver(function (es) {
          es.forEach(function (e) { if (e.isIntersecting) { e.target.havDraw(); io.unobserve(e.target); } });
        });
        cards.slice(first).forEach(function (c) { c.canvas.havDraw = c.draw; io.observe(c.canvas); });
      } else {
        cards.slice(first).forEach(function (c) { c.draw(); });
      }
    });
  };

  Viewer.prototype.diffCard = function (grid, layer, head, change, rank, rows, cols) {
    var self = this, card = el('div', 'hav-diff-card'), L = this.models[0].layers[layer];
    card.dataset.layer = String(layer);
    card.dataset.head = String(head);
    card.dataset.change = String(change);
    card.appendChild(el('div', 'hav-diff-title', '#' + (rank + 1) + ' layer ' + layer + ' \u00b7 ' +
      L.head_names[head] + ' \u00b7 change ' + fmt(change, 3)));
    var body = el('div', 'hav-diff-body'), c = el('canvas', 'hav-diffmap'), nr = rows[1] - rows[0], nc = cols[1] - cols[0];
    var f = diffPool(nr, nc);  // a long text's map is pooled to at most DIFF_PIXELS a side (shown 150 px wide)
    c.width = Math.ceil(nc / f); c.height = Math.ceil(nr / f);
    c.dataset.pool = String(f);
    var px = 150;
    c.style.width = (nr >= nc ? Math.round(px * nc / nr) : px) + 'px';
    c.style.height = (nr >= nc ? px : Math.round(px * nr / nc)) + 'px';
    body.appendChild(c);
    var tbl = el('table', 'hav-metrics hav-deltas'), w = this.models[0].metric_window, seg = this.state.segment;
    [['entropy', 'entropy', 3], ['mean distance', 'mean_distance', 2], ['sink mass', 'sink_mass', 3],
     ['mass within ' + w, 'mass_within_' + w, 3], ['previous token', 'prev_token', 3]].forEach(function (r) {
      var tr = el('tr');
      tr.appendChild(el('td', null, '\u0394 ' + r[0]));
      var d = self.segmentMetric(0, layer, head, r[1], seg) - self.segmentMetric(1, layer, head, r[1], seg);
      tr.dataset.key = r[1];
      tr.dataset.delta = String(d);
      tr.appendChild(el('td', null, signed(d, r[2])));
      tbl.appendChild(tr);
    });
    body.appendChild(tbl);
    card.appendChild(body);
    card.addEventListener('click', function () {
      self.set({view: 'matrix', layer: layer, matrixHead: head, heads: new Set([head])});
    });
    grid.appendChild(card);
    var T = this.models[0].length;
    var draw = function () {
      if (c.dataset.drawn) { return Promise.resolve(); }
      return self.diffImage(layer, head, rows, cols, !!self.state.shared).then(function (D) {
        var A = D.A, B = D.B, big = D.big;
        c.getContext('2d').putImageData(D.img, 0, 0);
        c.dataset.drawn = '1';
        c.title = 'largest |A \u2212 B| ' + fmt(big, 4) + (self.state.shared ? ' (shared scale: \u00b11)' : ' (colour scale)');
        c.addEventListener('mousemove', function (ev) {
          var r = c.getBoundingClientRect(), j = cols[0] + Math.min(nc - 1, Math.floor((ev.clientX - r.left) / r.width * nc));
          var i = rows[0] + Math.min(nr - 1, Math.floor((ev.clientY - r.top) / r.height * nr)), m = self.models[0];
          self.showTip(ev, 'query ' + i + ' ' + JSON.stringify(m.tokens[i]) + '\n\u2192 key ' + j + ' ' +
            JSON.stringify(m.tokens[j]) + '\nA ' + fmt(A[i * T + j], 4) + '  B ' + fmt(B[i * T + j], 4) +
            '  A\u2212B ' + signed(A[i * T + j] - B[i * T + j], 4));
        });
      });
    };
    return {canvas: c, draw: draw};
  };

  /** One head's A - B map on a block (rows x cols), coloured (red +, blue -) on its largest |A - B| or, shared, on
      +-1: {img, big, A, B}. Kept (the last DIFF_KEEP) so that the A - B view shown again, or after the page made
      its first maps while idle (Viewer.prebuild), only puts them on its canvases. */
  Viewer.prototype.diffImage = function (layer, head, rows, cols, shared) {
    var self = this, key = [layer, head, rows[0], rows[1], cols[0], cols[1], shared].join(':');
    if (!this.diffImages) { this.diffImages = new Map(); }
    if (this.diffImages.has(key)) { return this.diffImages.get(key); }
    var T = this.models[0].length, nr = rows[1] - rows[0], nc = cols[1] - cols[0];
    var p = Promise.all([this.matrix(0, layer, head), this.matrix(1, layer, head)]).then(function (ab) {
      // each pixel: the pooled f x f cells' difference of largest magnitude (sign kept), as the thumbnails max-pool
      var f = diffPool(nr, nc), W = Math.ceil(nc / f), H = Math.ceil(nr / f), pooled = new Float32Array(W * H);
      var A = ab[0], B = ab[1], big = 0, i, j, x, o;
      for (i = rows[0]; i < rows[1]; i++) {
        var po = ((i - rows[0]) / f | 0) * W;
        for (j = cols[0]; j < cols[1]; j++) {
          x = A[i * T + j] - B[i * T + j];
          o = po + ((j - cols[0]) / f | 0);
          if (x > big) { big = x; } else if (-x > big) { big = -x; }
          if (x * x > pooled[o] * pooled[o]) { pooled[o] = x; }
        }
      }
      var inv = 1 / (shared ? 1 : (big || 1)), img = new ImageData(W, H), d = img.data;
      for (o = 0; o < W * H; o++) { diffColor(pooled[o] * inv, d, 4 * o); }
      return {img: img, big: big, A: A, B: B};
    });
    this.diffImages.set(key, p);
    if (this.diffImages.size > DIFF_KEEP) { this.diffImages.delete(this.diffImages.keys().next().value); }
    p.catch(function () { self.diffImages.delete(key); });
    return p;
  };

  // ------------------------------------------------------------------ one model's panel
  function Panel(viewer, mi) {
    this.v = viewer;
    this.mi = mi;
    this.m = viewer.models[mi];
    var m = this.m, e = this.el = el('div', 'hav-panel');
    e.dataset.model = String(mi);
    e.appendChild(el('div', 'hav-panel-title', m.name));
    var variants = Array.from(new Set(m.layers.map(function (L) { return L.variant; })));
    e.appendChild(el('div', 'hav-panel-sub', m.model_class + ' \u00b7 ' + m.length + ' tokens \u00b7 ' +
      m.layers.length + ' layers \u00b7 ' + variants.join(', ') + (m.causal ? ' \u00b7 causal' : '')));
    this.headsBox = el('div', 'hav-heads');
    e.appendChild(this.headsBox);
    this.views = {};
    var self = this;
    ['head', 'model', 'matrix', 'attribution'].forEach(function (v) {
      var d = el('div', 'hav-view hav-' + v + '-view');
      self.views[v] = d;
      e.appendChild(d);
    });
    this.builtHead = false;
    this.builtModel = false;
    this.highlight = [];
  }

  Panel.prototype.layer = function () {
    return Math.min(this.v.state.layer, this.m.layers.length - 1);
  };

  Panel.prototype.render = function () {
    var s = this.v.state, self = this;
    Object.keys(this.views).forEach(function (v) { self.views[v].classList.toggle('hav-shown', v === s.view); });
    this.renderHeadToggles();
    if (s.view === 'head') { return this.renderHeadView(); }
    if (s.view === 'model') { return this.renderModelView(); }
    if (s.view === 'attribution') { return this.renderAttribution(); }
    return this.renderMatrixView();
  };

  Panel.prototype.renderHeadToggles = function () {
    var v = this.v, s = v.state, L = this.m.layers[this.layer()], mi = this.mi, self = this;
    this.headsBox.textContent = '';
    this.headsBox.style.display = s.view === 'attribution' ? 'none' : '';
    for (var h = 0; h < L.heads; h++) {
      (function (h) {
        var t = el('div', 'hav-head-toggle', String(h));
        t.dataset.head = String(h);
        t.style.background = headColor(h);
        var on = s.view === 'matrix' ? h === s.matrixHead : s.heads.has(h);
        if (on) { t.classList.add('hav-on'); }
        if (s.view !== 'head' && h === s.matrixHead) { t.classList.add('hav-current'); }
        t.addEventListener('click', function () {
          if (s.view === 'head') {
            var next = new Set(s.heads);
            if (next.has(h)) { next.delete(h); } else { next.add(h); }
            v.set({heads: next, matrixHead: h});
          } else {
            v.set({matrixHead: h});
          }
        });
        t.addEventListener('dblclick', function () { v.set({heads: new Set([h]), matrixHead: h}); });
        v.hoverMetrics(t, mi, function () { return self.layer(); }, h);
        self.headsBox.appendChild(t);
      })(h);
    }
  };

  // ---- head view: token columns and one viewport-sized canvas that draws the lines of the rows in view. The
  // columns are virtual: each is T * ROW px tall, but only the rows in view (and ROW_SLACK on either side) exist
  // as elements, rebuilt on scroll, so showing the view again or scrolling lays out about a hundred rows, not 2T.
  Panel.prototype.buildHeadView = function () {
    var v = this.v, m = this.m, self = this, box = this.views.head, T = m.length;
    var scroll = el('div', 'hav-headview-scroll'), grid = el('div', 'hav-headview');
    this.leftCol = el('div', 'hav-tokcol hav-left');
    this.rightCol = el('div', 'hav-tokcol hav-right');
    this.leftCol.style.height = this.rightCol.style.height = (T * ROW) + 'px';
    this.lines = el('div', 'hav-lines');
    this.canvas = el('canvas', 'hav-linecanvas');
    this.lines.appendChild(this.canvas);
    this.rowRange = [0, 0];
    this.selected = null;   // {side, token}: the row marked selected
    this.shade = null;      // {side, alpha: Float32Array(T)}: the other side's rows shaded by the selected token
    var p = m.pair_start;
    [[this.leftCol, 'left'], [this.rightCol, 'right']].forEach(function (pair) {  // one listener per column
      pair[0].addEventListener('click', function (ev) {
        var t = ev.target.closest('.hav-tok');
        if (!t) { return; }
        var i = Number(t.dataset.i), s = v.state, same = s.token === i && s.side === pair[1];
        v.set({token: same ? null : i, side: pair[1]});
      });
    });
    this.scroller = scroll;
    var pending = false;
    scroll.addEventListener('scroll', function () {
      if (pending) { return; }
      pending = true;
      requestAnimationFrame(function () {
        pending = false;
        self.fillRows(false);
        if (self.drawState) { self.drawLines(); }
      });
    });
    this.lines.style.height = (T * ROW) + 'px';
    grid.appendChild(this.leftCol);
    grid.appendChild(this.lines);
    grid.appendChild(this.rightCol);
    scroll.appendChild(grid);
    box.appendChild(el('div', 'hav-note', 'left: queries (attending) \u00b7 right: keys (attended to)' +
      (m.causal ? ' \u00b7 causal: a token sees itself and earlier tokens' : '') +
      (p ? ' \u00b7 the line between tokens ' + (p - 1) + ' and ' + p + ' divides the two texts' : '')));
    box.appendChild(scroll);
    this.builtHead = true;
  };

  /** Make the token rows in view (and ROW_SLACK more on each side) exist, marked with the selection and the
      shading; force: rebuild them even when the range has not changed (the selection or shading did). */
  Panel.prototype.fillRows = function (force) {
    var m = this.m, T = m.length, sc = this.scroller;
    if (!sc) { return; }
    var viewH = sc.clientHeight || Math.round(0.78 * (window.innerHeight || 900));
    var top = sc.scrollTop;
    var r0 = Math.max(0, Math.floor(top / ROW) - ROW_SLACK), r1 = Math.min(T, Math.ceil((top + viewH) / ROW) + ROW_SLACK);
    if (!force && r0 === this.rowRange[0] && r1 === this.rowRange[1]) { return; }
    this.rowRange = [r0, r1];
    var p = m.pair_start, sel = this.selected, shade = this.shade;
    [[this.leftCol, 'left'], [this.rightCol, 'right']].forEach(function (pair) {
      var col = pair[0], side = pair[1], frag = document.createDocumentFragment();
      var alpha = shade && shade.side === side ? shade.alpha : null;
      for (var i = r0; i < r1; i++) {
        var tok = m.tokens[i], t = el('div', 'hav-tok' + (p && i === p ? ' hav-seg-start' : ''), tok);
        t.dataset.i = String(i);
        t.title = i + ': ' + tok;
        if (sel && sel.side === side && sel.token === i) { t.classList.add('hav-selected'); }
        else if (alpha && alpha[i] > 0.03) { t.style.background = 'rgba(255, 165, 0, ' + alpha[i].toFixed(3) + ')'; }
        frag.appendChild(t);
      }
      col.style.paddingTop = (r0 * ROW) + 'px';
      col.textContent = '';
      col.appendChild(frag);
    });
    this.v.root.dataset.tokenRows = r0 + '-' + r1;
  };

  Panel.prototype.scrollToToken = function (t) {
    if (!this.scroller || this.v.state.view !== 'head') { return; }
    var sc = this.scroller, y = t * ROW;
    if (y < sc.scrollTop) { sc.scrollTop = y; }
    else if (y + ROW > sc.scrollTop + sc.clientHeight) { sc.scrollTop = y + ROW - sc.clientHeight; }
  };

  Panel.prototype.renderHeadView = function () {
    if (!this.builtHead) { this.buildHeadView(); }
    var v = this.v, s = v.state, m = this.m, layer = this.layer(), L = m.layers[layer], self = this;
    var heads = Array.from(s.heads).filter(function (h) { return h < L.heads; }).sort(function (a, b) {
      return a - b;
    });
    var T = m.length;
    var token = s.token !== null && s.token < T ? s.token : null;
    // everything the lines, the selection and the shading depend on (the matrices follow from layer and heads)
    var key = [layer, heads.join(','), token, token === null ? '' : s.side, !!s.shared].join('|');
    // the matrices drawn last stay with the panel: shown again after another view decoded enough to push them out
    // of the cache (24 matrices of 1,024 x 1,024 in compare mode), they are not decoded a second time
    var kept = {}, last = this.drawState;
    if (last && last.layer === layer) { last.heads.forEach(function (h, k) { kept[h] = last.mats[k]; }); }
    return Promise.all(heads.map(function (h) { return kept[h] || v.matrix(self.mi, layer, h); })).then(function (mats) {
      if (self.drawState && self.drawState.key === key) {  // shown again with nothing changed: rows and lines kept
        self.drawState.mats = mats;
        self.fillRows(false);
        self.drawLines();
        return;
      }
      self.selected = token === null ? null : {side: s.side, token: token};
      self.drawState = {heads: heads, mats: mats, T: T, L: L, layer: layer, token: token, side: s.side,
                        shared: s.shared, key: key};
      self.shade = null;
      if (token !== null) { self.shadeOthers(); }
      self.fillRows(true);
      self.drawLines();
    });
  };

  Panel.prototype.shadeOthers = function () {
    var o = this.drawState, T = o.T, shade = new Float32Array(T), lines = [];
    o.heads.forEach(function (h, k) {
      var A = o.mats[k];
      for (var x = 0; x < T; x++) {
        var i = o.side === 'left' ? o.token : x, j = o.side === 'left' ? x : o.token, w = A[i * T + j];
        shade[x] += w / o.heads.length;
        if (w >= 0.001) { lines.push([h, i, j, w]); }
      }
    });
    lines.sort(function (a, b) { return a[3] - b[3]; });
    this.highlight = lines;  // every line of the selected token (the canvas draws those in view)
    this.v.root.dataset.highlighted = String(lines.length);
    for (var x = 0; x < T; x++) { shade[x] = Math.min(1, Math.sqrt(shade[x])); }
    this.shade = {side: o.side === 'left' ? 'right' : 'left', alpha: shade};
  };

  /** Draw the lines that cross the visible part of the head view onto the viewport-sized canvas. */
  Panel.prototype.drawLines = function () {
    var o = this.drawState, T = o.T, sc = this.scroller, c = this.canvas;
    var width = Math.max(120, this.lines.clientWidth || 200);
    var viewH = Math.min(T * ROW, sc.clientHeight || T * ROW);
    var dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(width * dpr) || c.height !== Math.round(viewH * dpr)) {
      c.width = Math.round(width * dpr); c.height = Math.round(viewH * dpr);
      c.style.width = width + 'px'; c.style.height = viewH + 'px';
      this.drawnKey = null;  // resizing cleared it
    }
    // the canvas is sticky: its offset inside the (T * ROW)-tall column is how far the list has scrolled
    var off = Math.max(0, Math.min(T * ROW - viewH, c.getBoundingClientRect().top - this.lines.getBoundingClientRect().top));
    // what the canvas shows already (the view shown again, a scroll event that did not move it): kept as it is
    var key = o.key + '|' + width + '|' + viewH + '|' + off + '|' + dpr;
    if (key === this.drawnKey) { this.redrawsSkipped = (this.redrawsSkipped || 0) + 1; return; }
    this.drawnKey = key;
    var ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, viewH);
    var top = off / ROW, bottom = (off + viewH) / ROW;  // visible rows [top, bottom)
    this.visibleRows = [Math.floor(top), Math.min(T, Math.ceil(bottom))];
    this.v.root.dataset.overviewRows = this.visibleRows[0] + '-' + this.visibleRows[1];
    var y = function (i) { return (i + 0.5) * ROW - off; };
    var p = this.m.pair_start;
    if (p) {  // the divider between the two texts of a pair
      ctx.strokeStyle = '#57606a'; ctx.lineWidth = 1; ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(0, p * ROW - off); ctx.lineTo(width, p * ROW - off); ctx.stroke();
      ctx.setLineDash([]);
    }
    var cross = function (i, j) { var a = i < j ? i : j, b = i < j ? j : i; return b + 0.5 >= top && a + 0.5 <= bottom; };
    var scaleOf = function (A) { return o.shared ? (o.L.value_max || 1) : (A.max || 1); };
    if (o.token !== null) {
      var lines = this.highlight, drawn = 0;
      for (var n = 0; n < lines.length; n++) {
        var l = lines[n], w = l[3];
        if (!cross(l[1], l[2])) { continue; }
        ctx.globalAlpha = Math.min(1, 0.15 + 0.85 * Math.sqrt(Math.min(1, w)));
        ctx.strokeStyle = headColor(l[0]);
        var lw = 1 + 3 * Math.min(1, w);
        ctx.lineWidth = lw < 1.25 ? 1 : lw;  // the many faint lines as hairlines (fast), the strong ones wider
        ctx.beginPath(); ctx.moveTo(0, y(l[1])); ctx.lineTo(width, y(l[2])); ctx.stroke();
        drawn++;
      }
      ctx.globalAlpha = 1;
      this.linesDrawn = drawn;
      return;
    }
    this.highlight = [];
    // overview: lines bucketed by weight (on the head's scale) so that each (head, bucket) is one path; at most
    // LINE_BUDGET lines in all, the strongest buckets first (a diffuse head at 512 tokens has 10^5 pairs above
    // 1% of its largest weight: drawing them all takes seconds and shows nothing)
    var alphaScale = o.heads.length > 1 ? 0.6 : 0.9, total = 0, budget = Math.max(100, LINE_BUDGET / o.heads.length);
    ctx.lineWidth = 1;  // 1 px: Skia's hairline path, 3-6x faster to rasterise than 1.2 px strokes (same look)
    var skipped = 0;
    o.heads.forEach(function (h, k) {
      var A = o.mats[k], scale = scaleOf(A), counts = new Int32Array(8), i, j, base, w;
      var lo = Math.max(0, Math.floor(top - 0.5)), hi = Math.min(T, Math.ceil(bottom - 0.5));
      // pass 1: how many crossing lines fall in each bucket (rows in view: all columns; other rows: the
      // columns on the far side of the view, the only lines of theirs that cross it; so the column range
      // [j0, j1) of row i is exactly its lines that cross the view)
      var min = LINE_MIN * scale, inv = 1 / scale, j0, j1, bk;
      for (i = 0; i < T; i++) {
        base = i * T; j0 = i < lo ? lo : 0; j1 = i >= hi ? hi : T;
        for (j = j0; j < j1; j++) {
          w = A[base + j];
          if (w >= min) { bk = Math.sqrt(w * inv) * 8; counts[bk >= 7 ? 7 : bk | 0]++; }
        }
      }
      var keepFrom = 8, kept = 0;
      while (keepFrom > 0 && kept + counts[keepFrom - 1] <= budget) { keepFrom--; kept += counts[keepFrom]; }
      // the next bucket down fills the rest of the budget, every stride-th line (a near-uniform head puts
      // all its lines in one bucket)
      var part = keepFrom - 1, stride = part >= 0 && kept < budget ? Math.ceil(counts[part] / (budget - kept)) : 0;
      var seen = 0;
      for (var b0 = 0; b0 < keepFrom; b0++) { skipped += counts[b0]; }
      var buckets = [];
      for (var b = 0; b < 8; b++) { buckets.push([]); }
      // pass 2: only the buckets kept (weights below the lowest one kept cannot be drawn)
      var lowest = stride ? part : keepFrom, min2 = Math.max(min, scale * (lowest / 8) * (lowest / 8) * (1 - 1e-9));
      if (keepFrom < 8 || stride) {
        for (i = 0; i < T; i++) {
          base = i * T; j0 = i < lo ? lo : 0; j1 = i >= hi ? hi : T;
          for (j = j0; j < j1; j++) {
            w = A[base + j];
            if (w < min2) { continue; }
            bk = Math.sqrt(w * inv) * 8; bk = bk >= 7 ? 7 : bk | 0;
            if (bk >= keepFrom) { buckets[bk].push(i, j); }
            else if (bk === part && stride && (seen++ % stride === 0)) { buckets[bk].push(i, j); skipped--; }
          }
        }
      }
      ctx.strokeStyle = headColor(h);
      buckets.forEach(function (pairs, b) {
        if (!pairs.length) { return; }
        total += pairs.length / 2;
        ctx.globalAlpha = alphaScale * (b + 1) / 8;
        ctx.beginPath();
        for (var n = 0; n < pairs.length; n += 2) {
          ctx.moveTo(0, y(pairs[n]));
          ctx.lineTo(width, y(pairs[n + 1]));
        }
        ctx.stroke();
      });
    });
    ctx.globalAlpha = 1;
    this.linesDrawn = total;
    this.linesSkipped = skipped;
  };

  // ---- model view
  /** The model view: a layer x head grid (built once: on the first open, or before it when the page is idle, see
      Viewer.prebuild). Every thumbnail is drawn into ONE canvas per panel that lies under the grid's cells (the
      cells are transparent boxes, for the pointer, the tooltip and the outline), so opening the view paints one
      canvas rather than 72 (144 in compare mode) small ones. */
  Panel.prototype.buildModelView = function () {
    var v = this.v, m = this.m, box = this.views.model, self = this;
    if (this.builtModel) { return; }
    var nL = m.layers.length, maxH = Math.max.apply(null, m.layers.map(function (L) { return L.heads; }));
    var grid = el('div', 'hav-modelgrid');
    var px = v.models.length > 1 ? 42 : 56, gap = 3;  // compare mode: two grids side by side
    grid.style.gridTemplateColumns = 'max-content repeat(' + maxH + ', ' + (px + 2) + 'px)';
    grid.style.gridTemplateRows = 'auto repeat(' + nL + ', ' + px + 'px)';
    grid.style.gap = gap + 'px';
    var place = function (node, row, col, rows, cols) {  // explicit places: the canvas shares its cells
      node.style.gridRow = row + (rows ? ' / span ' + rows : '');
      node.style.gridColumn = col + (cols ? ' / span ' + cols : '');
      grid.appendChild(node);
      return node;
    };
    var canvas = el('canvas', 'hav-thumbs');
    var W = maxH * (px + 2) + (maxH - 1) * gap, H = nL * px + (nL - 1) * gap, dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    canvas.style.width = W + 'px'; canvas.style.height = H + 'px';
    place(canvas, 2, 2, nL, maxH);
    for (var h = 0; h < maxH; h++) { place(el('div', 'hav-collabel', 'h' + h), 1, h + 2); }
    this.thumbs = [];
    m.layers.forEach(function (L, l) {
      var label = 'L' + l + ' ' + L.variant + (L.window !== null ? ' w=' + L.window : '');
      place(el('div', 'hav-rowlabel', label), l + 2, 1);
      for (var h = 0; h < L.heads; h++) {
        var c = place(el('div', 'hav-thumb'), l + 2, h + 2);
        c.style.width = c.style.height = px + 'px';
        c.dataset.layer = String(l);
        c.dataset.head = String(h);
        // where its thumbnail goes on the canvas: inside the cell's 1 px border
        self.thumbs.push({cell: c, layer: l, head: h, x: h * (px + 2 + gap) + 1, y: l * (px + gap) + 1, size: px - 2});
      }
    });
    // one listener each for the grid (the cell under the pointer says which head)
    var cellOf = function (ev) { return ev.target.closest ? ev.target.closest('.hav-thumb') : null; };
    grid.addEventListener('click', function (ev) {
      var t = cellOf(ev);
      if (!t) { return; }
      var l = Number(t.dataset.layer), h = Number(t.dataset.head);
      v.set({view: 'matrix', layer: l, matrixHead: h, heads: new Set([h])});
    });
    grid.addEventListener('mousemove', function (ev) {
      var t = cellOf(ev);
      if (t) { v.showTip(ev, v.metricsText(self.mi, Number(t.dataset.layer), Number(t.dataset.head))); }
    });
    box.appendChild(el('div', 'hav-note', 'each thumbnail: one head\u2019s attention (max-pooled to ' + m.thumb_size +
      'x' + m.thumb_size + ', scaled to its own maximum); click to open it in the matrix view'));
    box.appendChild(grid);
    this.thumbCanvas = canvas;
    this.builtModel = true;
  };

  /** Draw every thumbnail onto the panel's canvas (once): the stored sqrt-scaled bytes, white -> dark blue,
      scaled up without smoothing. */
  Panel.prototype.drawThumbs = function () {
    if (this.thumbsDrawn) { return; }
    this.buildModelView();
    var m = this.m, S = m.thumb_size, lut = new Uint8ClampedArray(256 * 4), dpr = window.devicePixelRatio || 1;
    for (var x = 0; x < 256; x++) {  // white -> dark blue
      lut[4 * x] = 255 - x * 0.93; lut[4 * x + 1] = 255 - x * 0.7; lut[4 * x + 2] = 255 - x * 0.3;
      lut[4 * x + 3] = 255;
    }
    var tile = el('canvas'), tctx = tile.getContext('2d'), img = new ImageData(S, S), d = img.data;
    tile.width = S; tile.height = S;
    var ctx = this.thumbCanvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.imageSmoothingEnabled = false;
    this.thumbs.forEach(function (t) {
      var bytes = b64bytes(m.layers[t.layer].thumbnails[t.head]);
      for (var p = 0; p < S * S; p++) {
        var b = 4 * bytes[p];
        d[4 * p] = lut[b]; d[4 * p + 1] = lut[b + 1]; d[4 * p + 2] = lut[b + 2]; d[4 * p + 3] = 255;
      }
      tctx.putImageData(img, 0, 0);
      ctx.drawImage(tile, 0, 0, S, S, t.x, t.y, t.size, t.size);
      t.cell.dataset.drawn = '1';
    });
    this.thumbsDrawn = true;
  };

  Panel.prototype.renderModelView = function () {
    var v = this.v, self = this, s = v.state;
    this.drawThumbs();
    this.thumbs.forEach(function (t) {
      t.cell.classList.toggle('hav-current', t.layer === self.layer() && t.head === s.matrixHead);
    });
    return Promise.resolve();
  };

  // ---- matrix view: one head's heatmap, zoomable (wheel, drag, buttons), token labels on both axes
  Panel.prototype.renderMatrixView = function () {
    var v = this.v, s = v.state, m = this.m, layer = this.layer(), L = m.layers[layer], self = this;
    var head = Math.min(s.matrixHead, L.heads - 1);
    return v.matrix(this.mi, layer, head).then(function (A) {
      var zeroP = L.zero_slot ? decode(L.zero_slot[head], m, L) : Promise.resolve(null);
      return zeroP.then(function (zero) {
        var scale = s.shared ? (L.value_max || 1) : (A.max || 1);
        self.buildMatrix(self.views.matrix, {A: A, zero: zero, scale: scale, key: 'a:' + layer + ':' + head + ':' + scale,
          L: L, layer: layer, head: head, kind: 'attention'});
      });
    });
  };

  Panel.prototype.matrixTitle = function (src) {
    var L = src.L, head = src.head, band = L.band_heads.indexOf(head) >= 0;
    if (src.kind === 'rollout') { return 'attention rollout after layer ' + src.layer; }
    return 'layer ' + src.layer + ' \u00b7 ' + L.head_names[head] + ' \u00b7 ' + L.variant +
      (L.band_combine ? ' (' + L.band_combine + ')' : '') + (band ? ' \u00b7 w=' + L.window : '') +
      (band && L.global_tokens ? ' \u00b7 ' + L.global_tokens + ' global' : '');
  };

  Panel.prototype.buildMatrix = function (box, src) {
    var v = this.v, m = this.m, self = this, T = m.length, L = src.L, head = src.head;
    box.textContent = '';
    var t = el('div', 'hav-matrix-title', this.matrixTitle(src));
    t.style.fontWeight = '600';
    box.appendChild(t);
    if (src.kind === 'rollout') {
      box.appendChild(el('div', 'hav-note', 'row i: how much of output token i after this layer traces back to input ' +
        'token j (Abnar & Zuidema 2020: head-averaged attention plus the residual, multiplied up the layers)'));
    } else if (L.kind === 'lstmn') {
      box.appendChild(el('div', 'hav-note', 'LSTMN intra-attention over the tape (' + L.head_names[head] +
        '): row t = the step reading token t, column i = tape slot of token i; \u2205 = the initial zero slot'));
    } else {
      box.appendChild(el('div', 'hav-note', 'row = query token, column = key token' +
        (L.band_combine === 'sum' ? ' \u00b7 band_combine=sum: rows sum to 2 (low-rank + band)' : '')));
    }
    var tools = el('div', 'hav-zoombar');
    [['+', 'zoom in', 0.5], ['\u2212', 'zoom out', 2], ['reset', 'show the whole matrix', 0]].forEach(function (b) {
      var btn = el('button', 'hav-zoom hav-zoom-' + (b[2] === 0.5 ? 'in' : b[2] === 2 ? 'out' : 'reset'), b[0]);
      btn.type = 'button';
      btn.title = b[1];
      btn.addEventListener('click', function () {
        var z = self.zoomWindow();
        if (b[2] === 0) { v.setZoom(null); return; }
        v.setZoom(zoomAbout(z, T, b[2], z.x0 + z.n / 2, z.y0 + z.n / 2));
      });
      tools.appendChild(btn);
    });
    if (src.kind === 'attention') {
      var csv = el('button', 'hav-export-csv', 'CSV of this head');
      csv.type = 'button';
      csv.addEventListener('click', function () { v.exportCsv(self.mi, src.layer, head); });
      tools.appendChild(csv);
    }
    this.zoomLabel = el('span', 'hav-note');
    tools.appendChild(this.zoomLabel);
    tools.appendChild(el('span', 'hav-note', ' wheel: zoom \u00b7 drag: pan'));
    box.appendChild(tools);
    var wrap = el('div', 'hav-matrix-wrap'), row = el('div', 'hav-matrix-row');
    var avail = (this.el.clientWidth || 900) - 300 - LABEL_LEFT - (src.zero ? 30 : 0);
    var size = Math.max(200, Math.min(560, avail));
    var zc = null;
    if (src.zero) {
      zc = el('canvas', 'hav-zero');
      zc.width = 1; zc.height = T;
      zc.style.width = '10px';
      zc.style.height = size + 'px';
      zc.style.marginTop = LABEL_TOP + 'px';
      zc.title = '\u2205 zero slot';
      row.appendChild(zc);
    }
    var mb = el('div', 'hav-matrix-box'), c = el('canvas', 'hav-heatmap'), dpr = window.devicePixelRatio || 1;
    c.width = Math.round((LABEL_LEFT + size) * dpr);
    c.height = Math.round((LABEL_TOP + size) * dpr);
    c.style.width = (LABEL_LEFT + size) + 'px';
    c.style.height = (LABEL_TOP + size) + 'px';
    mb.appendChild(c);
    var overlay = el('div', 'hav-overlay');
    overlay.style.left = LABEL_LEFT + 'px';
    overlay.style.top = LABEL_TOP + 'px';
    overlay.innerHTML = src.kind === 'attention' ? this.outlineSvg(L, head, T, size) :
      '<svg class="hav-outline" width="' + size + '" height="' + size + '" viewBox="0 0 ' + T + ' ' + T +
      '" preserveAspectRatio="none"></svg>';
    mb.appendChild(overlay);
    row.appendChild(mb);
    wrap.appendChild(row);
    if (src.kind === 'attention') { wrap.appendChild(this.sidePanel(L, src.layer, head, L.band_heads.indexOf(head) >= 0, src)); }
    else if (src.side) { wrap.appendChild(src.side); }
    box.appendChild(wrap);
    // the T x T image (colour scale applied), kept while the same matrix and scale are shown
    if (!this.images) { this.images = {}; }
    var cache = this.images[src.kind];
    if (!cache || cache.key !== src.key) {
      var off = el('canvas'), img = new ImageData(T, T), A = src.A, inv = 1 / (src.scale || 1);
      off.width = T; off.height = T;
      for (var p = 0; p < T * T; p++) { heatColor(A[p] * inv, img.data, 4 * p); }
      off.getContext('2d').putImageData(img, 0, 0);
      var zoff = null;
      if (src.zero) {
        zoff = el('canvas'); zoff.width = 1; zoff.height = T;
        var zimg = new ImageData(1, T);
        for (var zi = 0; zi < T; zi++) { heatColor(src.zero[zi] * inv, zimg.data, 4 * zi); }
        zoff.getContext('2d').putImageData(zimg, 0, 0);
      }
      cache = this.images[src.kind] = {key: src.key, image: off, zero: zoff};
    }
    this.plot = {canvas: c, svg: overlay.firstChild, zeroCanvas: zc, size: size, src: src, image: cache.image,
                 zeroImage: cache.zero};
    c.dataset.scale = String(src.scale);
    this.bindMatrixEvents(c, zc);
    this.paintMatrix();
  };

  function zoomAbout(z, T, factor, cx, cy) {
    var n = Math.max(Math.min(T, 8), Math.min(T, Math.round(z.n * factor)));
    var x0 = Math.round(cx - (cx - z.x0) * n / z.n), y0 = Math.round(cy - (cy - z.y0) * n / z.n);
    return clampZoom({x0: x0, y0: y0, n: n}, T);
  }
  function clampZoom(z, T) {
    var n = Math.max(1, Math.min(T, z.n));
    return {n: n, x0: Math.max(0, Math.min(T - n, z.x0)), y0: Math.max(0, Math.min(T - n, z.y0))};
  }

  Panel.prototype.zoomWindow = function () {
    var z = this.v.state.zoom, T = this.m.length;
    return z ? clampZoom(z, T) : {x0: 0, y0: 0, n: T};
  };

  Viewer.prototype.setZoom = function (z) {
    this.state.zoom = z;
    this.hideTip();
    this.panels.forEach(function (p) { if (p.plot && p.plot.canvas.isConnected) { p.paintMatrix(); } });
  };

  Panel.prototype.cellAt = function (ev) {
    var P = this.plot, r = P.canvas.getBoundingClientRect(), z = this.zoomWindow();
    var x = ev.clientX - r.left - LABEL_LEFT, y = ev.clientY - r.top - LABEL_TOP;
    if (x < 0 || y < 0 || x >= P.size || y >= P.size) { return null; }
    return {i: z.y0 + Math.floor(y / P.size * z.n), j: z.x0 + Math.floor(x / P.size * z.n), fx: x / P.size, fy: y / P.size};
  };

  Panel.prototype.bindMatrixEvents = function (c, zc) {
    var v = this.v, self = this, T = this.m.length, m = this.m, drag = null;
    c.addEventListener('mousemove', function (ev) {
      if (drag) {
        var P = self.plot, z = drag.z, dx = (ev.clientX - drag.x) / P.size * z.n, dy = (ev.clientY - drag.y) / P.size * z.n;
        if (Math.abs(ev.clientX - drag.x) + Math.abs(ev.clientY - drag.y) > 3) { drag.moved = true; }
        if (drag.moved) { v.setZoom(clampZoom({n: z.n, x0: Math.round(z.x0 - dx), y0: Math.round(z.y0 - dy)}, T)); }
        return;
      }
      var cell = self.cellAt(ev);
      if (!cell) { return; }
      var A = self.plot.src.A, what = self.plot.src.kind === 'rollout' ? 'output ' : 'query ';
      v.showTip(ev, what + cell.i + ' ' + JSON.stringify(m.tokens[cell.i]) + '\n\u2192 ' +
        (self.plot.src.kind === 'rollout' ? 'input ' : 'key ') + cell.j + ' ' + JSON.stringify(m.tokens[cell.j]) + ': ' +
        fmt(A[cell.i * T + cell.j], 4));
    });
    c.addEventListener('mouseleave', function () { v.hideTip(); });
    c.addEventListener('mousedown', function (ev) {
      if (ev.button !== 0) { return; }
      drag = {x: ev.clientX, y: ev.clientY, z: self.zoomWindow(), moved: false, cell: self.cellAt(ev)};
      ev.preventDefault();
      var up = function () {
        window.removeEventListener('mouseup', up);
        var d = drag;
        drag = null;
        if (d && !d.moved && d.cell) { v.set({token: d.cell.i, side: 'left'}); }
      };
      window.addEventListener('mouseup', up);
    });
    c.addEventListener('wheel', function (ev) {
      var cell = self.cellAt(ev);
      if (!cell) { return; }
      ev.preventDefault();
      var z = self.zoomWindow();
      v.setZoom(zoomAbout(z, T, ev.deltaY > 0 ? 1.25 : 0.8, z.x0 + cell.fx * z.n, z.y0 + cell.fy * z.n));
    }, {passive: false});
    if (zc) {
      zc.addEventListener('mousemove', function (ev) {
        var r = zc.getBoundingClientRect(), z = self.zoomWindow();
        var i = Math.min(T - 1, z.y0 + Math.floor((ev.clientY - r.top) / r.height * z.n));
        v.showTip(ev, 'step ' + i + ' ' + JSON.stringify(m.tokens[i]) + ' \u2192 \u2205 zero slot: ' +
          fmt(self.plot.src.zero[i], 4));
      });
      zc.addEventListener('mouseleave', function () { v.hideTip(); });
    }
  };

  /** Draw the zoom window of the image, the token labels in view, and move the outline's viewBox. */
  Panel.prototype.paintMatrix = function () {
    var P = this.plot, z = this.zoomWindow(), m = this.m, T = m.length, S = P.size, dpr = window.devicePixelRatio || 1;
    var ctx = P.canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, LABEL_LEFT + S, LABEL_TOP + S);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(P.image, z.x0, z.y0, z.n, z.n, LABEL_LEFT, LABEL_TOP, S, S);
    ctx.strokeStyle = '#d0d7de';
    ctx.lineWidth = 1;
    ctx.strokeRect(LABEL_LEFT - 0.5, LABEL_TOP - 0.5, S + 1, S + 1);
    var cell = S / z.n, step = Math.max(1, Math.ceil(11 / cell)), short = function (s) {
      s = String(s); return s.length > 11 ? s.slice(0, 10) + '\u2026' : s;
    };
    ctx.fillStyle = '#1f2328';
    ctx.font = '10px ui-monospace, Menlo, Consolas, monospace';
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    var first = Math.ceil(z.y0 / step) * step;
    for (var i = first; i < z.y0 + z.n; i += step) {
      ctx.fillText(short(m.tokens[i]) + ' ' + i, LABEL_LEFT - 3, LABEL_TOP + (i - z.y0 + 0.5) * cell);
    }
    first = Math.ceil(z.x0 / step) * step;
    for (var j = first; j < z.x0 + z.n; j += step) {
      ctx.save();
      ctx.translate(LABEL_LEFT + (j - z.x0 + 0.5) * cell, LABEL_TOP - 3);
      ctx.rotate(-Math.PI / 3);
      ctx.textAlign = 'left';
      ctx.fillText(j + ' ' + short(m.tokens[j]), 0, 0);
      ctx.restore();
    }
    var p = m.pair_start;
    if (p && p > z.x0 && p < z.x0 + z.n) {  // the divider between the two texts of a pair
      ctx.strokeStyle = '#57606a'; ctx.setLineDash([3, 3]);
      ctx.beginPath();
      ctx.moveTo(LABEL_LEFT + (p - z.x0) * cell, LABEL_TOP - 12); ctx.lineTo(LABEL_LEFT + (p - z.x0) * cell, LABEL_TOP);
      ctx.stroke(); ctx.setLineDash([]);
    }
    if (p && p > z.y0 && p < z.y0 + z.n) {
      ctx.strokeStyle = '#57606a'; ctx.setLineDash([3, 3]);
      ctx.beginPath();
      ctx.moveTo(LABEL_LEFT - 12, LABEL_TOP + (p - z.y0) * cell); ctx.lineTo(LABEL_LEFT, LABEL_TOP + (p - z.y0) * cell);
      ctx.stroke(); ctx.setLineDash([]);
    }
    if (P.svg) { P.svg.setAttribute('viewBox', z.x0 + ' ' + z.y0 + ' ' + z.n + ' ' + z.n); }
    if (P.zeroCanvas && P.zeroImage) {
      var zx = P.zeroCanvas.getContext('2d');
      zx.imageSmoothingEnabled = false;
      P.zeroCanvas.height = z.n;
      zx.drawImage(P.zeroImage, 0, z.y0, 1, z.n, 0, 0, 1, z.n);
    }
    P.canvas.dataset.zoom = z.x0 + ',' + z.y0 + ',' + z.n;
    if (this.zoomLabel) {
      this.zoomLabel.textContent = z.n === T ? ' all ' + T + ' tokens' : ' rows ' + z.y0 + '\u2013' + (z.y0 + z.n - 1) +
        ', columns ' + z.x0 + '\u2013' + (z.x0 + z.n - 1) + ' of ' + T;
    }
  };

  Panel.prototype.outlineSvg = function (L, head, T, size) {
    var parts = ['<svg class="hav-outline" width="' + size + '" height="' + size + '" viewBox="0 0 ' + T + ' ' + T +
      '" preserveAspectRatio="none">'];
    var s = this.v.state, sel = s.token !== null && s.token < T && s.side === 'left' ? s.token : null;
    if (L.band_heads.indexOf(head) >= 0) {
      var w = L.window, causal = this.m.causal, left = [], right = [];
      for (var i = 0; i < T; i++) {
        var lo = Math.max(0, i - w), hi = Math.min(T, causal ? i + 1 : i + w + 1);
        left.push(lo + ',' + i, lo + ',' + (i + 1));
        right.unshift(hi + ',' + (i + 1), hi + ',' + i);
      }
      parts.push('<polygon class="hav-band" points="' + left.concat(right).join(' ') +
        '" fill="none" stroke="#d62728" stroke-width="1.6" vector-effect="non-scaling-stroke"></polygon>');
      var g = Math.min(L.global_tokens || 0, T);
      if (g > 0) {
        parts.push('<rect class="hav-global" x="0" y="0" width="' + T + '" height="' + g + '" fill="none" ' +
          'stroke="#2ca02c" stroke-width="1.6" stroke-dasharray="4 3" vector-effect="non-scaling-stroke"></rect>');
        parts.push('<rect class="hav-global" x="0" y="0" width="' + g + '" height="' + T + '" fill="none" ' +
          'stroke="#2ca02c" stroke-width="1.6" stroke-dasharray="4 3" vector-effect="non-scaling-stroke"></rect>');
      }
    }
    if (sel !== null) {
      parts.push('<rect class="hav-selrow" x="0" y="' + sel + '" width="' + T + '" height="1" fill="none" ' +
        'stroke="#ffb000" stroke-width="1.5" vector-effect="non-scaling-stroke"></rect>');
    }
    parts.push('</svg>');
    return parts.join('');
  };

  Panel.prototype.sidePanel = function (L, layer, head, band, src) {
    var v = this.v, m = this.m, side = el('div', 'hav-side');
    side.appendChild(el('h4', null, 'this head (analysis.metrics)'));
    var tbl = el('table', 'hav-metrics'), g = function (k) { return L.metrics[k] ? L.metrics[k][head] : NaN; };
    var w = m.metric_window;
    [['entropy (nats)', fmt(g('entropy'), 3)], ['uniform entropy', fmt(g('uniform_entropy'), 3)],
     ['mean distance', fmt(g('mean_distance'), 2)], ['sink mass', fmt(g('sink_mass'), 3)],
     ['mass within ' + w, v.windowText(this.mi, layer, head)], ['previous token', fmt(g('prev_token'), 3)],
     ['next token', fmt(g('next_token'), 3)]].forEach(function (r) {
      var tr = el('tr');
      tr.appendChild(el('td', null, r[0]));
      tr.appendChild(el('td', 'hav-metric-value', r[1]));
      tbl.appendChild(tr);
    });
    side.appendChild(tbl);
    var legend = el('div', 'hav-legend');
    legend.innerHTML = 'colour: \u221a(weight / ' + fmt(src.scale, 3) + '), white 0 \u2192 dark ' + fmt(src.scale, 3) +
      (v.state.shared ? ' (shared scale)' : ' (this head\u2019s largest weight)') +
      (band ? '<br><span class="hav-key" style="border-color:#d62728"></span>band window w=' + esc(L.window) : '') +
      (band && L.global_tokens ? '<br><span class="hav-key" style="border-color:#2ca02c;border-top-style:dashed">' +
        '</span>global tokens (' + esc(L.global_tokens) + ')' : '');
    side.appendChild(legend);
    var sv = L.singular_values ? L.singular_values[head] : null;
    if (sv && sv.length) { side.appendChild(this.singularChart(sv, L)); }
    return side;
  };

  Panel.prototype.singularChart = function (sv, L) {
    var box = el('div', 'hav-sv'), top = sv[0] || 1, floor = -7;
    var rank = sv.filter(function (x) { return x > top * 1e-4; }).length;
    box.appendChild(el('h4', null, 'singular values of the score matrix'));
    box.appendChild(el('div', 'hav-note', 'scale \u00b7 Q\u2095K\u2095\u1d40 over these tokens, before softmax; ' +
      sv.length + ' values, ' + rank + ' above 1e-4\u00b7\u03c3\u2081 (numerical rank)'));
    var W = 240, H = 110, bw = W / sv.length, parts = ['<svg class="hav-svchart" width="' + W + '" height="' +
      (H + 16) + '">'];
    sv.forEach(function (x, k) {
      var r = x > 0 ? Math.max(floor, Math.log10(x / top)) : floor, h = H * (1 - r / floor);
      parts.push('<rect x="' + (k * bw).toFixed(2) + '" y="' + (H - h).toFixed(2) + '" width="' +
        Math.max(0.5, bw - 0.5).toFixed(2) + '" height="' + h.toFixed(2) + '" fill="' +
        (x > top * 1e-4 ? '#0b5cad' : '#b0b7bf') + '"><title>\u03c3' + (k + 1) + ' = ' + x.toPrecision(4) +
        '</title></rect>');
    });
    parts.push('<text x="0" y="' + (H + 13) + '" font-size="10" fill="#57606a">log\u2081\u2080 \u03c3/\u03c3\u2081 ' +
      'from 0 (top) to ' + floor + ' (bottom)</text></svg>');
    var holder = el('div');
    holder.innerHTML = parts.join('');
    box.appendChild(holder);
    return box;
  };

  // ---- attribution: attention rollout (per layer) and head importance (from `hf-attn-variants analyze`)
  Panel.prototype.renderAttribution = function () {
    var v = this.v, m = this.m, layer = this.layer(), self = this, box = this.views.attribution;
    var side = this.importanceBox();
    if (!m.rollout) {
      box.textContent = '';
      box.appendChild(el('div', 'hav-note', 'no rollout stored in this page'));
      box.appendChild(side);
      return Promise.resolve();
    }
    return v.rollout(this.mi, layer).then(function (R) {
      var scale = v.state.shared ? 1 : (R.max || 1);
      self.buildMatrix(box, {A: R, zero: null, scale: scale, key: 'r:' + layer + ':' + scale, L: m.layers[layer],
        layer: layer, head: null, kind: 'rollout', side: side});
    });
  };

  Panel.prototype.importanceBox = function () {
    var v = this.v, m = this.m, box = el('div', 'hav-side hav-importance'), imp = m.importance;
    box.appendChild(el('h4', null, 'head importance'));
    if (!imp) {
      box.appendChild(el('div', 'hav-note', 'not in this page: run `hf-attn-variants analyze MODEL --out DIR` and ' +
        'pass --importance DIR/importance.csv to `view`'));
      return box;
    }
    box.appendChild(el('div', 'hav-note', imp.description));
    Object.keys(imp.columns).forEach(function (key) {
      var vals = imp.columns[key], big = 0;
      vals.forEach(function (r) { r.forEach(function (x) { big = Math.max(big, Math.abs(x)); }); });
      box.appendChild(el('div', 'hav-imp-name', key));
      var tbl = el('table', 'hav-imp-grid');
      tbl.dataset.key = key;
      vals.forEach(function (r, l) {
        var tr = el('tr');
        tr.appendChild(el('th', null, 'L' + l));
        r.forEach(function (x, h) {
          var td = el('td', 'hav-imp-cell'), a = big ? Math.sqrt(Math.abs(x) / big) : 0;
          td.dataset.layer = String(l); td.dataset.head = String(h); td.dataset.value = String(x);
          td.style.background = x >= 0 ? 'rgba(11, 92, 173, ' + a.toFixed(3) + ')' : 'rgba(214, 39, 40, ' + a.toFixed(3) + ')';
          td.addEventListener('mousemove', function (ev) {
            v.showTip(ev, key + ', layer ' + l + ' head ' + h + ': ' + Number(x).toPrecision(4) + '\n(click: matrix view)');
          });
          td.addEventListener('click', function () { v.set({view: 'matrix', layer: l, matrixHead: h, heads: new Set([h])}); });
          tr.appendChild(td);
        });
        tbl.appendChild(tr);
      });
      box.appendChild(tbl);
    });
    return box;
  };

  HAV.mount = function (root) {
    try {
      var t0 = performance.now();  // from navigation start: the page read and parsed up to here
      var data = JSON.parse(root.querySelector('script.hav-data').textContent);
      var t1 = performance.now();
      root.hav = new Viewer(root, data);
      root.hav.timings = {mountAt: t0, jsonMs: t1 - t0, buildMs: performance.now() - t1};
    } catch (err) {
      root.dataset.error = String(err && err.message || err);
      root.appendChild(el('div', 'hav-error', 'attention viewer failed: ' + root.dataset.error));
      throw err;
    }
    return root.hav;
  };
  HAV.heatColor = heatColor;
})();
