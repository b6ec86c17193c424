/* hf-attn-variants attention viewer: head view, model view, matrix view, compare mode.
   Self-contained (no network). HAV.mount(root) reads the JSON in root's <script class="hav-data">.
   Matrices are decoded lazily (one (layer, head) at a time, cached), thumbnails are precomputed. */
(function () {
  'use strict';
  var HAV = window.HAV = window.HAV || {};
  if (HAV.mount) { return; }

  var ROW = 20;                 // px per token row in the head view
  var LINE_MIN = 0.01;          // overview lines below this weight are not drawn
  var COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f',
                '#bcbd22', '#17becf', '#393b79', '#637939', '#8c6d31', '#843c39', '#7b4173', '#3182bd'];
  var VIEWS = ['head', 'model', 'matrix'];

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
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
    return new Response(stream).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }
  function toFloats(bytes, precision, valueMax) {
    if (precision === 'uint8') {  // u = round(255 sqrt(w / valueMax))
      var q = new Float32Array(256), f = new Float32Array(bytes.length);
      for (var k = 0; k < 256; k++) { q[k] = (k / 255) * (k / 255) * valueMax; }
      for (var n = 0; n < bytes.length; n++) { f[n] = q[bytes[n]]; }
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

  // ------------------------------------------------------------------ one viewer
  function Viewer(root, data) {
    this.root = root;
    this.data = data;
    this.models = data.models;
    this.cache = new Map();
    this.pending = 0;
    this.renders = 0;
    this.waiters = [];
    var maxHeads = 0;
    this.models[0].layers[0] && (maxHeads = this.models[0].layers[0].heads);
    var heads = [];
    for (var h = 0; h < maxHeads; h++) { heads.push(h); }
    this.state = {view: 'head', layer: 0, heads: new Set(heads), matrixHead: 0, token: null, side: 'left'};
    this.build();
  }

  Viewer.prototype.numLayers = function () {
    return Math.max.apply(null, this.models.map(function (m) { return m.layers.length; }));
  };

  Viewer.prototype.matrix = function (mi, layer, head) {
    var key = mi + ':' + layer + ':' + head, self = this;
    if (this.cache.has(key)) { return this.cache.get(key); }
    var m = this.models[mi], p = decode(m.layers[layer].attention[head], m, m.layers[layer]);
    this.cache.set(key, p);
    if (this.cache.size > 64) { this.cache.delete(this.cache.keys().next().value); }
    p.catch(function () { self.cache.delete(key); });
    return p;
  };

  Viewer.prototype.build = function () {
    var self = this, root = this.root;
    var bar = el('div', 'hav-bar');
    bar.appendChild(el('span', 'hav-title', this.data.title || 'attention'));
    this.tabs = {};
    VIEWS.forEach(function (v) {
      var b = el('button', 'hav-tab hav-tab-' + v, v + ' view');
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
    bar.appendChild(el('span', 'hav-note',
      'click a head box to toggle it (double-click: only it), a token to see its attention'));
    root.appendChild(bar);
    var panels = el('div', 'hav-panels' + (this.models.length > 1 ? ' hav-compare' : ''));
    this.panels = this.models.map(function (m, mi) {
      var p = new Panel(self, mi);
      panels.appendChild(p.el);
      return p;
    });
    root.appendChild(panels);
    this.tip = el('div', 'hav-tip');
    root.appendChild(this.tip);
    this.render();
  };

  Viewer.prototype.set = function (patch) {
    var s = this.state;
    Object.keys(patch).forEach(function (k) { s[k] = patch[k]; });
    this.render();
  };

  Viewer.prototype.render = function () {
    var self = this, s = this.state;
    VIEWS.forEach(function (v) { self.tabs[v].classList.toggle('hav-active', v === s.view); });
    this.layerSelect.value = String(s.layer);
    this.root.dataset.view = s.view;
    this.root.dataset.layer = String(s.layer);
    this.pending++;
    this.root.dataset.ready = '0';
    var t0 = performance.now();
    Promise.all(this.panels.map(function (p) { return p.render(); })).then(function () {
      self.lastRenderMs = performance.now() - t0;
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

  /** A promise resolved once every render started so far has finished (for tests and scripts). */
  Viewer.prototype.idle = function () {
    var self = this;
    return this.pending === 0 ? Promise.resolve() : new Promise(function (r) { self.waiters.push(r); });
  };

  Viewer.prototype.metricsText = function (mi, layer, head) {
    var m = this.models[mi], L = m.layers[layer];
    if (!L) { return ''; }
    var g = function (k) { return L.metrics[k] ? L.metrics[k][head] : NaN; };
    var w = m.metric_window;
    return 'layer ' + layer + ' \u00b7 ' + L.head_names[head] + ' \u00b7 ' + L.variant + '\n' +
      'entropy        ' + fmt(g('entropy'), 3) + ' nats (uniform ' + fmt(g('uniform_entropy'), 3) + ')\n' +
      'mean distance  ' + fmt(g('mean_distance'), 2) + ' tokens\n' +
      'sink mass      ' + fmt(g('sink_mass'), 3) + '\n' +
      'mass within ' + w + (String(w).length < 2 ? '  ' : ' ') + fmt(g('mass_within_' + w), 3) + '\n' +
      'prev / next    ' + fmt(g('prev_token'), 3) + ' / ' + fmt(g('next_token'), 3);
  };

  Viewer.prototype.showTip = function (ev, text) {
    this.tip.textContent = text;
    this.tip.style.display = 'block';
    var x = ev.clientX + 14, y = ev.clientY + 14;
    if (x + 330 > window.innerWidth) { x = Math.max(0, ev.clientX - 330); }
    this.tip.style.left = x + 'px';
    this.tip.style.top = y + 'px';
  };
  Viewer.prototype.hideTip = function () { this.tip.style.display = 'none'; };
  Viewer.prototype.hoverMetrics = function (node, mi, layerFn, head) {
    var self = this;
    node.addEventListener('mousemove', function (ev) { self.showTip(ev, self.metricsText(mi, layerFn(), head)); });
    node.addEventListener('mouseleave', function () { self.hideTip(); });
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
    VIEWS.forEach(function (v) {
      var d = el('div', 'hav-view hav-' + v + '-view');
      self.views[v] = d;
      e.appendChild(d);
    });
    this.builtHead = false;
    this.builtModel = false;
  }

  Panel.prototype.layer = function () {
    return Math.min(this.v.state.layer, this.m.layers.length - 1);
  };

  Panel.prototype.render = function () {
    var s = this.v.state, self = this;
    VIEWS.forEach(function (v) { self.views[v].classList.toggle('hav-shown', v === s.view); });
    this.renderHeadToggles();
    if (s.view === 'head') { return this.renderHeadView(); }
    if (s.view === 'model') { return this.renderModelView(); }
    return this.renderMatrixView();
  };

  Panel.prototype.renderHeadToggles = function () {
    var v = this.v, s = v.state, L = this.m.layers[this.layer()], mi = this.mi, self = this;
    this.headsBox.textContent = '';
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

  // ---- head view
  Panel.prototype.buildHeadView = function () {
    var v = this.v, m = this.m, self = this, box = this.views.head;
    var scroll = el('div', 'hav-headview-scroll'), grid = el('div', 'hav-headview');
    this.leftCol = el('div', 'hav-tokcol hav-left');
    this.rightCol = el('div', 'hav-tokcol hav-right');
    this.lines = el('div', 'hav-lines');
    this.canvas = el('canvas');
    this.svgWrap = el('div', 'hav-svg-wrap');
    this.lines.appendChild(this.canvas);
    this.lines.appendChild(this.svgWrap);
    this.leftToks = [];
    this.rightToks = [];
    m.tokens.forEach(function (tok, i) {
      ['left', 'right'].forEach(function (side) {
        var t = el('div', 'hav-tok', tok);
        t.dataset.i = String(i);
        t.title = i + ': ' + tok;
        (side === 'left' ? self.leftCol : self.rightCol).appendChild(t);
        (side === 'left' ? self.leftToks : self.rightToks).push(t);
      });
    });
    [[this.leftCol, 'left'], [this.rightCol, 'right']].forEach(function (pair) {  // one listener per column
      pair[0].addEventListener('click', function (ev) {
        var t = ev.target.closest('.hav-tok');
        if (!t) { return; }
        var i = Number(t.dataset.i), s = v.state, same = s.token === i && s.side === pair[1];
        v.set({token: same ? null : i, side: pair[1]});
      });
    });
    // the overview draws the lines of the query rows in view; redrawn as the list scrolls
    this.scroller = scroll;
    var pending = false;
    scroll.addEventListener('scroll', function () {
      if (pending || !self.overview) { return; }
      pending = true;
      requestAnimationFrame(function () { pending = false; if (self.overview) { self.drawOverview(); } });
    });
    this.lines.style.height = (m.length * ROW) + 'px';
    grid.appendChild(this.leftCol);
    grid.appendChild(this.lines);
    grid.appendChild(this.rightCol);
    scroll.appendChild(grid);
    box.appendChild(el('div', 'hav-note', 'left: queries (attending) \u00b7 right: keys (attended to)' +
      (m.causal ? ' \u00b7 causal: a token sees itself and earlier tokens' : '')));
    box.appendChild(scroll);
    this.builtHead = true;
  };

  Panel.prototype.renderHeadView = function () {
    if (!this.builtHead) { this.buildHeadView(); }
    var v = this.v, s = v.state, m = this.m, layer = this.layer(), L = m.layers[layer], self = this;
    var heads = Array.from(s.heads).filter(function (h) { return h < L.heads; }).sort(function (a, b) {
      return a - b;
    });
    var T = m.length;
    var width = Math.max(120, this.lines.clientWidth || 200);
    return Promise.all(heads.map(function (h) { return v.matrix(self.mi, layer, h); })).then(function (mats) {
      var token = s.token !== null && s.token < T ? s.token : null;
      self.leftToks.forEach(function (t, i) {
        t.classList.toggle('hav-selected', token === i && s.side === 'left');
        t.style.background = '';
      });
      self.rightToks.forEach(function (t, i) {
        t.classList.toggle('hav-selected', token === i && s.side === 'right');
        t.style.background = '';
      });
      var ctx = self.canvas.getContext('2d'), dpr = window.devicePixelRatio || 1;
      self.canvas.width = Math.round(width * dpr);
      self.canvas.height = Math.round(T * ROW * dpr);
      self.canvas.style.width = width + 'px';
      self.canvas.style.height = (T * ROW) + 'px';
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, width, T * ROW);
      if (token === null) {
        self.svgWrap.innerHTML = '';
        self.overview = {ctx: ctx, heads: heads, mats: mats, width: width, T: T, L: L};
        self.drawOverview();
      } else {
        self.overview = null;
        self.drawSelected(heads, mats, width, T, token, s.side);
      }
    });
  };

  Panel.prototype.drawOverview = function () {
    // lines bucketed by weight so that each (head, bucket) is one path; long texts: only the query rows
    // in view (and a margin), so that 512 tokens x 12 heads draw in milliseconds
    var o = this.overview, ctx = o.ctx, heads = o.heads, mats = o.mats, width = o.width, T = o.T;
    var scale = o.L.value_max || 1, alphaScale = heads.length > 1 ? 0.6 : 0.9;
    var first = 0, last = T;
    if (T > 160 && this.scroller.clientHeight > 0) {
      first = Math.max(0, Math.floor(this.scroller.scrollTop / ROW) - 40);
      last = Math.min(T, Math.ceil((this.scroller.scrollTop + this.scroller.clientHeight) / ROW) + 40);
    }
    ctx.clearRect(0, 0, width, T * ROW);
    ctx.lineWidth = 1.2;
    this.v.root.dataset.overviewRows = first + '-' + last;
    heads.forEach(function (h, k) {
      var A = mats[k], buckets = [];
      for (var b = 0; b < 8; b++) { buckets.push([]); }
      for (var i = first; i < last; i++) {
        for (var j = 0; j < T; j++) {
          var w = A[i * T + j] / scale;
          if (w >= LINE_MIN) { buckets[Math.min(7, Math.floor(Math.sqrt(w) * 8))].push(i, j); }
        }
      }
      ctx.strokeStyle = headColor(h);
      buckets.forEach(function (pairs, b) {
        if (!pairs.length) { return; }
        ctx.globalAlpha = alphaScale * (b + 1) / 8;
        ctx.beginPath();
        for (var n = 0; n < pairs.length; n += 2) {
          ctx.moveTo(0, (pairs[n] + 0.5) * ROW);
          ctx.lineTo(width, (pairs[n + 1] + 0.5) * ROW);
        }
        ctx.stroke();
      });
    });
    ctx.globalAlpha = 1;
  };

  Panel.prototype.drawSelected = function (heads, mats, width, T, token, side) {
    // the selected token's lines as SVG elements (class hav-hl), strongest last so they are on top
    var lines = [], shade = new Float32Array(T), self = this;
    heads.forEach(function (h, k) {
      var A = mats[k];
      for (var o = 0; o < T; o++) {
        var i = side === 'left' ? token : o, j = side === 'left' ? o : token, w = A[i * T + j];
        shade[o] += w / heads.length;
        if (w >= 0.001) { lines.push([w, h, i, j]); }
      }
    });
    lines.sort(function (a, b) { return a[0] - b[0]; });
    var parts = ['<svg class="hav-svg" width="' + width + '" height="' + (T * ROW) + '">'];
    lines.forEach(function (l) {
      var w = l[0], op = Math.min(1, 0.15 + 0.85 * Math.sqrt(Math.min(1, w)));
      parts.push('<line class="hav-line hav-hl" data-head="' + l[1] + '" data-from="' + l[2] + '" data-to="' + l[3] +
        '" data-weight="' + w.toFixed(5) + '" x1="0" y1="' + ((l[2] + 0.5) * ROW) + '" x2="' + width + '" y2="' +
        ((l[3] + 0.5) * ROW) + '" stroke="' + headColor(l[1]) + '" stroke-opacity="' + op.toFixed(3) +
        '" stroke-width="' + (1 + 3 * Math.min(1, w)).toFixed(2) + '"></line>');
    });
    parts.push('</svg>');
    this.svgWrap.innerHTML = parts.join('');
    var others = side === 'left' ? this.rightToks : this.leftToks;
    others.forEach(function (t, o) {
      var a = Math.min(1, Math.sqrt(shade[o]));
      t.style.background = a > 0.03 ? 'rgba(255, 165, 0, ' + a.toFixed(3) + ')' : '';
    });
    self.v.root.dataset.highlighted = String(lines.length);
  };

  // ---- model view
  Panel.prototype.renderModelView = function () {
    var v = this.v, m = this.m, box = this.views.model, self = this;
    if (!this.builtModel) {
      var maxH = Math.max.apply(null, m.layers.map(function (L) { return L.heads; }));
      var grid = el('div', 'hav-modelgrid');
      var px = v.models.length > 1 ? 42 : 56;  // compare mode: two grids side by side
      grid.style.gridTemplateColumns = 'max-content repeat(' + maxH + ', ' + (px + 2) + 'px)';
      grid.appendChild(el('div'));
      for (var h = 0; h < maxH; h++) { grid.appendChild(el('div', 'hav-collabel', 'h' + h)); }
      var S = m.thumb_size, lut = new Uint8ClampedArray(256 * 4);
      for (var x = 0; x < 256; x++) {  // white -> dark blue
        lut[4 * x] = 255 - x * 0.93; lut[4 * x + 1] = 255 - x * 0.7; lut[4 * x + 2] = 255 - x * 0.3;
        lut[4 * x + 3] = 255;
      }
      this.thumbs = [];
      m.layers.forEach(function (L, l) {
        var label = 'L' + l + ' ' + L.variant + (L.window !== null ? ' w=' + L.window : '');
        grid.appendChild(el('div', 'hav-rowlabel', label));
        for (var h = 0; h < maxH; h++) {
          if (h >= L.heads) { grid.appendChild(el('div')); continue; }
          var c = el('canvas', 'hav-thumb');
          c.width = S; c.height = S;
          c.style.width = c.style.height = px + 'px';
          c.dataset.layer = String(l);
          c.dataset.head = String(h);
          self.thumbs.push({canvas: c, layer: l, head: h, drawn: false});
          (function (l, h) {
            c.addEventListener('click', function () {
              v.set({view: 'matrix', layer: l, matrixHead: h, heads: new Set([h])});
            });
            v.hoverMetrics(c, self.mi, function () { return l; }, h);
          })(l, h);
          grid.appendChild(c);
        }
      });
      box.appendChild(el('div', 'hav-note', 'each thumbnail: one head\u2019s attention (max-pooled to ' + S + 'x' +
        S + ', scaled to its own maximum); click to open it in the matrix view'));
      box.appendChild(grid);
      this.thumbLut = lut;
      this.builtModel = true;
      // drawn lazily: only the thumbnails that scroll into view
      var draw = function (t) {
        if (t.drawn) { return; }
        var bytes = b64bytes(m.layers[t.layer].thumbnails[t.head]), img = new ImageData(S, S);
        for (var p = 0, d = img.data; p < S * S; p++) {
          var b = 4 * bytes[p];
          d[4 * p] = lut[b]; d[4 * p + 1] = lut[b + 1]; d[4 * p + 2] = lut[b + 2]; d[4 * p + 3] = 255;
        }
        t.canvas.getContext('2d').putImageData(img, 0, 0);
        t.drawn = true;
        t.canvas.dataset.drawn = '1';
      };
      this.drawThumb = draw;
      if (typeof IntersectionObserver !== 'undefined') {
        var byCanvas = new Map(this.thumbs.map(function (t) { return [t.canvas, t]; }));
        var io = new IntersectionObserver(function (entries) {
          entries.forEach(function (e) { if (e.isIntersecting) { draw(byCanvas.get(e.target)); } });
        });
        this.thumbs.forEach(function (t) { io.observe(t.canvas); });
      } else {
        this.thumbs.forEach(draw);
      }
    }
    // draw now what is on screen (the observer draws the rest when it scrolls into view)
    var vw = window.innerWidth, vh = window.innerHeight, gridBox = box.querySelector('.hav-modelgrid');
    var gr = gridBox.getBoundingClientRect();

    this.thumbs.forEach(function (t) {
      if (t.drawn) { return; }
      var r = t.canvas.getBoundingClientRect();
      if (r.bottom >= Math.max(0, gr.top) && r.top <= Math.min(vh, gr.bottom) && r.right >= 0 && r.left <= vw) {
        self.drawThumb(t);
      }
    });
    var s = v.state;
    this.thumbs.forEach(function (t) {
      t.canvas.classList.toggle('hav-current', t.layer === self.layer() && t.head === s.matrixHead);
    });
    return Promise.resolve();
  };

  // ---- matrix view
  Panel.prototype.renderMatrixView = function () {
    var v = this.v, s = v.state, m = this.m, layer = this.layer(), L = m.layers[layer], self = this;
    var head = Math.min(s.matrixHead, L.heads - 1), T = m.length;
    return v.matrix(this.mi, layer, head).then(function (A) {
      var zeroP = L.zero_slot ? decode(L.zero_slot[head], m, L) : Promise.resolve(null);
      return zeroP.then(function (zero) { self.drawMatrix(A, zero, L, layer, head, T); });
    });
  };

  function heatColor(w, out, o) {  // white -> blue -> dark purple, on sqrt(w)
    var x = Math.sqrt(Math.max(0, Math.min(1, w)));
    out[o] = 255 - 230 * x; out[o + 1] = 255 - 200 * x; out[o + 2] = 255 - 90 * x; out[o + 3] = 255;
  }

  Panel.prototype.drawMatrix = function (A, zero, L, layer, head, T) {
    var v = this.v, m = this.m, box = this.views.matrix, self = this;
    box.textContent = '';
    var band = L.band_heads.indexOf(head) >= 0;
    var title = 'layer ' + layer + ' \u00b7 ' + L.head_names[head] + ' \u00b7 ' + L.variant +
      (L.band_combine ? ' (' + L.band_combine + ')' : '') + (band ? ' \u00b7 w=' + L.window : '') +
      (band && L.global_tokens ? ' \u00b7 ' + L.global_tokens + ' global' : '');
    var t = el('div', 'hav-matrix-title', title);
    t.style.fontWeight = '600';
    box.appendChild(t);
    if (L.kind === 'lstmn') {
      box.appendChild(el('div', 'hav-note', 'LSTMN intra-attention over the tape (' + L.head_names[head] +
        '): row t = the step reading token t, column i = tape slot of token i; \u2205 = the initial zero slot'));
    } else {
      box.appendChild(el('div', 'hav-note', 'row = query token, column = key token' +
        (L.band_combine === 'sum' ? ' \u00b7 band_combine=sum: rows sum to 2 (low-rank + band)' : '')));
    }
    var wrap = el('div', 'hav-matrix-wrap'), row = el('div', 'hav-matrix-row');
    var avail = (this.el.clientWidth || 900) - 320 - (zero ? 30 : 0);
    var size = Math.max(200, Math.min(560, T * 24, avail)), scale = L.value_max || 1;
    if (zero) {
      var zc = el('canvas', 'hav-zero');
      zc.width = 1; zc.height = T;
      zc.style.width = Math.max(8, Math.round(size / T)) + 'px';
      zc.style.height = size + 'px';
      zc.style.imageRendering = 'pixelated';
      zc.style.border = '1px solid #d0d7de';
      var zimg = new ImageData(1, T);
      for (var zi = 0; zi < T; zi++) { heatColor(zero[zi], zimg.data, 4 * zi); }
      zc.getContext('2d').putImageData(zimg, 0, 0);
      zc.title = '\u2205 zero slot';
      zc.addEventListener('mousemove', function (ev) {
        var i = Math.min(T - 1, Math.floor(ev.offsetY / size * T));
        v.showTip(ev, 'step ' + i + ' ' + JSON.stringify(m.tokens[i]) + ' \u2192 \u2205 zero slot: ' +
          fmt(zero[i], 4));
      });
      zc.addEventListener('mouseleave', function () { v.hideTip(); });
      row.appendChild(zc);
    }
    var mb = el('div', 'hav-matrix-box'), c = el('canvas', 'hav-heatmap');
    c.width = T; c.height = T;
    c.style.width = size + 'px';
    c.style.height = size + 'px';
    var img = new ImageData(T, T);
    for (var p = 0; p < T * T; p++) { heatColor(A[p] / scale, img.data, 4 * p); }
    c.getContext('2d').putImageData(img, 0, 0);
    c.addEventListener('mousemove', function (ev) {
      var j = Math.min(T - 1, Math.floor(ev.offsetX / size * T)), i = Math.min(T - 1, Math.floor(ev.offsetY / size * T));
      v.showTip(ev, 'query ' + i + ' ' + JSON.stringify(m.tokens[i]) + '\n\u2192 key ' + j + ' ' +
        JSON.stringify(m.tokens[j]) + ': ' + fmt(A[i * T + j], 4));
    });
    c.addEventListener('mouseleave', function () { v.hideTip(); });
    c.addEventListener('click', function (ev) {
      var i = Math.min(T - 1, Math.floor(ev.offsetY / size * T));
      v.set({token: i, side: 'left'});
    });
    mb.appendChild(c);
    var overlay = el('div', 'hav-overlay');
    overlay.style.left = '1px';
    overlay.innerHTML = this.outlineSvg(L, head, T, size);
    mb.appendChild(overlay);
    row.appendChild(mb);
    wrap.appendChild(row);
    wrap.appendChild(this.sidePanel(L, layer, head, band));
    box.appendChild(wrap);
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

  Panel.prototype.sidePanel = function (L, layer, head, band) {
    var v = this.v, m = this.m, side = el('div', 'hav-side');
    side.appendChild(el('h4', null, 'this head (analysis.metrics)'));
    var tbl = el('table', 'hav-metrics'), g = function (k) { return L.metrics[k] ? L.metrics[k][head] : NaN; };
    var w = m.metric_window;
    [['entropy (nats)', fmt(g('entropy'), 3)], ['uniform entropy', fmt(g('uniform_entropy'), 3)],
     ['mean distance', fmt(g('mean_distance'), 2)], ['sink mass', fmt(g('sink_mass'), 3)],
     ['mass within ' + w, fmt(g('mass_within_' + w), 3)], ['previous token', fmt(g('prev_token'), 3)],
     ['next token', fmt(g('next_token'), 3)]].forEach(function (r) {
      var tr = el('tr');
      tr.appendChild(el('td', null, r[0]));
      tr.appendChild(el('td', null, r[1]));
      tbl.appendChild(tr);
    });
    side.appendChild(tbl);
    var legend = el('div', 'hav-legend');
    legend.innerHTML = 'color: \u221aweight, white 0 \u2192 dark 1' +
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
})();
