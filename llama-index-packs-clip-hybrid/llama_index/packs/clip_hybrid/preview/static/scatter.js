// The preview map: every indexed image one point (coloured by category), drawn with WebGL,
// plus an overlay for the few things that change per search (the query, its results, the
// hovered point). Drag to pan, wheel to zoom, double-click to reset; clicking a point or a
// legend entry calls back. A 2D canvas takes over where WebGL is not available.
//
// Why not plotly.js: loading and parsing its 4.6 MB bundle alone took ~2.7 s of the 2 s
// budget for a 10k-point page (benchmarks/bench_preview.py); this file is a few KB.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const POINT_PX = 7;      // point diameter, CSS pixels
const PICK_PX = 8;       // hover/click reach, CSS pixels

const VERTEX = `
attribute vec2 a_pos;
attribute vec4 a_color;
uniform vec2 u_center;
uniform vec2 u_scale;
uniform float u_size;
varying vec4 v_color;
void main() {
  gl_Position = vec4((a_pos - u_center) * u_scale, 0.0, 1.0);
  gl_PointSize = u_size;
  v_color = a_color;
}`;
const FRAGMENT = `
precision mediump float;
varying vec4 v_color;
void main() {
  if (v_color.a < 0.01 || length(gl_PointCoord - 0.5) > 0.5) discard;
  gl_FragColor = v_color;
}`;

function rgb(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
}

class ScatterMap {
  constructor(container, {onClick, onHover} = {}) {
    this.el = container;
    this.onClick = onClick || (() => {});
    this.onHover = onHover || (() => {});
    this.el.style.position = "relative";
    this.el.innerHTML = "";
    const layer = (tag, css) => {
      const node = document.createElement(tag);
      node.style.cssText = css;
      this.el.appendChild(node);
      return node;
    };
    this.canvas = layer("canvas", "position:absolute;inset:0;width:100%;height:100%");
    this.overlay = layer("canvas", "position:absolute;inset:0;width:100%;height:100%;pointer-events:none");
    this.legend = layer("div", "position:absolute;left:8px;top:6px;font-size:12px;background:#fffd;padding:2px 6px;border-radius:4px");
    this.tip = layer("div", "position:absolute;display:none;pointer-events:none;background:#fff;border:1px solid #bbb;padding:4px;font-size:12px;max-width:220px;z-index:2");
    this.gl = this.canvas.getContext("webgl", {antialias: true, preserveDrawingBuffer: true});
    this.renderer = this.gl ? "webgl" : "canvas2d";
    if (this.gl) this._initGl(); else this.ctx = this.canvas.getContext("2d");
    this.points = [];
    this.categories = [];
    this.hidden = new Set();
    this.markers = {results: [], query: null};
    this.hover = -1;
    this.view = {cx: 0, cy: 0, sx: 1, sy: 1};
    this.moved = false;   // the user panned or zoomed: do not refit on new markers
    this.drawn = 0;
    this._bind();
    new ResizeObserver(() => this.draw()).observe(this.el);
  }

  // -- data ----------------------------------------------------------------------------

  setPoints(points) {
    this.points = points;
    const counts = new Map();
    for (const p of points) counts.set(p.category, (counts.get(p.category) || 0) + 1);
    this.categories = [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([name, count], i) =>
      ({name, count, color: PALETTE[i % PALETTE.length]}));
    const colorOf = new Map(this.categories.map((c) => [c.name, rgb(c.color)]));
    this.xs = new Float32Array(points.length);
    this.ys = new Float32Array(points.length);
    this.cat = points.map((p) => p.category);
    this.positions = new Float32Array(points.length * 2);
    this.baseColors = new Float32Array(points.length * 4);
    points.forEach((p, i) => {
      this.xs[i] = p.x; this.ys[i] = p.y;
      this.positions[2 * i] = p.x; this.positions[2 * i + 1] = p.y;
      this.baseColors.set([...colorOf.get(p.category), 0.85], 4 * i);
    });
    if (this.gl) {
      const gl = this.gl;
      gl.bindBuffer(gl.ARRAY_BUFFER, this.posBuffer);
      gl.bufferData(gl.ARRAY_BUFFER, this.positions, gl.STATIC_DRAW);
      this._uploadColors();
    }
    this._renderLegend();
    this.moved = false;
    this.fit();
  }

  setMarkers({results = [], query = null} = {}) {
    this.markers = {results: results.filter((r) => r.x !== null && r.x !== undefined), query};
    if (!this.moved) this.fit(); else this.draw();
  }

  stats() {
    return {renderer: this.renderer, points: this.drawn, categories: this.categories.length,
            results: this.markers.results.length, query: Boolean(this.markers.query)};
  }

  // -- view ----------------------------------------------------------------------------

  fit() {
    let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
    const take = (x, y) => { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); };
    for (let i = 0; i < this.points.length; i++) take(this.xs[i], this.ys[i]);
    if (this.markers.query) take(this.markers.query.x, this.markers.query.y);
    if (!isFinite(x0)) { x0 = -1; x1 = 1; y0 = -1; y1 = 1; }
    const {w, h} = this._size();
    const pad = 24, top = this.legend.offsetHeight + 16;  // the legend sits over the top edge
    const spanX = Math.max(x1 - x0, 1e-6), spanY = Math.max(y1 - y0, 1e-6);
    const sx = Math.max(w - 2 * pad, 10) / spanX, sy = Math.max(h - pad - top, 10) / spanY;
    this.view = {cx: (x0 + x1) / 2, cy: (y0 + y1) / 2 + (top - pad) / 2 / sy, sx, sy};
    this.draw();
  }

  _size() {
    return {w: this.el.clientWidth || 1, h: this.el.clientHeight || 1};
  }

  toPixel(x, y) {
    const {w, h} = this._size();
    return [w / 2 + (x - this.view.cx) * this.view.sx, h / 2 - (y - this.view.cy) * this.view.sy];
  }

  nearest(px, py) {
    let best = -1, bestD = PICK_PX * PICK_PX;
    for (let i = 0; i < this.points.length; i++) {
      if (this.hidden.has(this.cat[i])) continue;
      const [x, y] = this.toPixel(this.xs[i], this.ys[i]);
      const d = (x - px) * (x - px) + (y - py) * (y - py);
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }

  // -- drawing -------------------------------------------------------------------------

  draw() {
    const {w, h} = this._size();
    const dpr = window.devicePixelRatio || 1;
    for (const c of [this.canvas, this.overlay]) {
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
      }
    }
    let visible = 0;
    for (const name of this.cat || []) if (!this.hidden.has(name)) visible++;
    if (this.gl) this._drawGl(w, h, dpr); else this._draw2d(w, h, dpr);
    this.drawn = visible;
    this._drawOverlay(dpr);
  }

  _drawGl(w, h, dpr) {
    const gl = this.gl;
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.clearColor(1, 1, 1, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (!this.points.length) return;
    gl.useProgram(this.program);
    gl.uniform2f(this.u.center, this.view.cx, this.view.cy);
    gl.uniform2f(this.u.scale, 2 * this.view.sx / w, 2 * this.view.sy / h);
    gl.uniform1f(this.u.size, POINT_PX * dpr);
    gl.drawArrays(gl.POINTS, 0, this.points.length);
  }

  _draw2d(w, h, dpr) {
    const ctx = this.ctx;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
    const color = new Map(this.categories.map((c) => [c.name, c.color]));
    ctx.globalAlpha = 0.85;
    for (let i = 0; i < this.points.length; i++) {
      if (this.hidden.has(this.cat[i])) continue;
      const [x, y] = this.toPixel(this.xs[i], this.ys[i]);
      ctx.fillStyle = color.get(this.cat[i]);
      ctx.fillRect(x - POINT_PX / 2, y - POINT_PX / 2, POINT_PX, POINT_PX);
    }
    ctx.globalAlpha = 1;
  }

  _drawOverlay(dpr) {
    const ctx = this.overlay.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, this.overlay.width, this.overlay.height);
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#d62728";
    ctx.fillStyle = "#d62728";
    for (const r of this.markers.results) {
      const [x, y] = this.toPixel(r.x, r.y);
      ctx.beginPath(); ctx.arc(x, y, 8, 0, 2 * Math.PI); ctx.stroke();
      if (r.rank !== undefined) ctx.fillText(String(r.rank), x + 9, y - 7);
    }
    const q = this.markers.query;
    if (q) {
      const [x, y] = this.toPixel(q.x, q.y);
      ctx.fillStyle = "#000";
      ctx.beginPath();
      for (let k = 0; k < 10; k++) {
        const radius = k % 2 ? 5 : 12, angle = -Math.PI / 2 + k * Math.PI / 5;
        ctx.lineTo(x + radius * Math.cos(angle), y + radius * Math.sin(angle));
      }
      ctx.closePath(); ctx.fill();
      ctx.fillText(q.label || "query", x + 13, y + 4);
    }
    if (this.hover >= 0) {
      const [x, y] = this.toPixel(this.xs[this.hover], this.ys[this.hover]);
      ctx.strokeStyle = "#000";
      ctx.beginPath(); ctx.arc(x, y, POINT_PX, 0, 2 * Math.PI); ctx.stroke();
    }
  }

  // -- plumbing ------------------------------------------------------------------------

  _initGl() {
    const gl = this.gl;
    const shader = (type, source) => {
      const s = gl.createShader(type);
      gl.shaderSource(s, source);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
      return s;
    };
    const program = gl.createProgram();
    gl.attachShader(program, shader(gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(program, shader(gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    this.program = program;
    this.u = {center: gl.getUniformLocation(program, "u_center"),
              scale: gl.getUniformLocation(program, "u_scale"),
              size: gl.getUniformLocation(program, "u_size")};
    this.posBuffer = gl.createBuffer();
    this.colorBuffer = gl.createBuffer();
    const pos = gl.getAttribLocation(program, "a_pos");
    gl.bindBuffer(gl.ARRAY_BUFFER, this.posBuffer);
    gl.enableVertexAttribArray(pos);
    gl.vertexAttribPointer(pos, 2, gl.FLOAT, false, 0, 0);
    const color = gl.getAttribLocation(program, "a_color");
    gl.bindBuffer(gl.ARRAY_BUFFER, this.colorBuffer);
    gl.enableVertexAttribArray(color);
    gl.vertexAttribPointer(color, 4, gl.FLOAT, false, 0, 0);
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
  }

  _uploadColors() {
    const colors = this.baseColors.slice();
    if (this.hidden.size) {
      for (let i = 0; i < this.cat.length; i++) if (this.hidden.has(this.cat[i])) colors[4 * i + 3] = 0;
    }
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.colorBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, colors, gl.STATIC_DRAW);
  }

  _renderLegend() {
    this.legend.innerHTML = "";
    for (const c of this.categories) {
      const item = document.createElement("span");
      item.className = "legend-item";
      item.dataset.category = c.name;
      item.style.cssText = "cursor:pointer;margin-right:10px;white-space:nowrap";
      item.innerHTML = `<span style="display:inline-block;width:9px;height:9px;border-radius:50%;background:${c.color}"></span> `;
      item.appendChild(document.createTextNode(`${c.name || "(none)"} (${c.count})`));
      item.addEventListener("click", () => {
        if (this.hidden.has(c.name)) this.hidden.delete(c.name); else this.hidden.add(c.name);
        item.style.opacity = this.hidden.has(c.name) ? 0.35 : 1;
        if (this.gl) this._uploadColors();
        this.draw();
      });
      this.legend.appendChild(item);
    }
  }

  _bind() {
    const at = (ev) => {
      const box = this.el.getBoundingClientRect();
      return [ev.clientX - box.left, ev.clientY - box.top];
    };
    let drag = null;
    this.el.addEventListener("mousedown", (ev) => {
      if (ev.target !== this.canvas) return;
      const [x, y] = at(ev);
      drag = {x, y, cx: this.view.cx, cy: this.view.cy, far: false};
    });
    window.addEventListener("mouseup", (ev) => {
      if (!drag) return;
      const wasClick = !drag.far;
      drag = null;
      if (!wasClick) return;
      const [x, y] = at(ev);
      const i = this.nearest(x, y);
      if (i >= 0) this.onClick(this.points[i]);
    });
    let pending = null;
    this.el.addEventListener("mousemove", (ev) => {
      const [x, y] = at(ev);
      if (drag) {
        if (Math.abs(x - drag.x) + Math.abs(y - drag.y) > 3) drag.far = true;
        if (drag.far) {
          this.view.cx = drag.cx - (x - drag.x) / this.view.sx;
          this.view.cy = drag.cy + (y - drag.y) / this.view.sy;
          this.moved = true;
          this.draw();
        }
        return;
      }
      if (pending) return;
      pending = requestAnimationFrame(() => {
        pending = null;
        const i = this.nearest(x, y);
        if (i === this.hover) return;
        this.hover = i;
        this._drawOverlay(window.devicePixelRatio || 1);
        if (i < 0) { this.tip.style.display = "none"; this.onHover(null); return; }
        this.tip.style.display = "block";
        this.tip.style.left = `${Math.min(x + 12, this._size().w - 230)}px`;
        this.tip.style.top = `${y + 12}px`;
        this.onHover(this.points[i], this.tip);
      });
    });
    this.el.addEventListener("mouseleave", () => {
      this.hover = -1; this.tip.style.display = "none"; this._drawOverlay(window.devicePixelRatio || 1);
    });
    this.el.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const [x, y] = at(ev);
      const {w, h} = this._size();
      const factor = Math.exp(-ev.deltaY * 0.0015);
      const dataX = this.view.cx + (x - w / 2) / this.view.sx;
      const dataY = this.view.cy - (y - h / 2) / this.view.sy;
      this.view.sx *= factor; this.view.sy *= factor;
      this.view.cx = dataX - (x - w / 2) / this.view.sx;
      this.view.cy = dataY + (y - h / 2) / this.view.sy;
      this.moved = true;
      this.draw();
    }, {passive: false});
    this.el.addEventListener("dblclick", () => { this.moved = false; this.fit(); });
  }
}

window.ScatterMap = ScatterMap;
