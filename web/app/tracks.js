// Tracks on one canvas: with thousands of live tracks, one DOM marker each would make every
// update a layout storm. Instead each frame blits a cached symbol per track (see sidc.js)
// and draws its callsign; a click is hit-tested against the positions of the last frame.
//
// Labels are decluttered: placed greedily (the party's own tracks first), and a label that
// would overlap one already placed is left out — zoom in to see it. A generalized track (no callsign: the provider shares only a 0.1° cell) is labelled
// "≈ PARTY" and, once the cell is large enough to see, drawn with its cell's circle.

import { symbolFor } from "./sidc.js";

const LABEL_LIMIT = 600; // above this many tracks in view, callsigns only from zoom 8 up

export class TrackLayer {
  constructor(map, party = "") {
    this.map = map;
    this.party = party;
    this.tracks = [];
    this.labels = []; // labels drawn in the last frame (for the tests)
    this.drawn = []; // [{x, y, track}] of the last frame, for hit-testing
    this.stats = { draws: 0, lastMs: 0, maxMs: 0, samples: [] };
    const pane = map.createPane("tracks");
    pane.style.zIndex = 450; // above areas (400), below popups (700)
    this.canvas = L.DomUtil.create("canvas", "tracks-canvas", pane);
    this.ctx = this.canvas.getContext("2d");
    this.pending = false;
    map.on("moveend zoomend resize viewreset", () => this.redraw());
    this.resize();
  }

  resize() {
    const size = this.map.getSize();
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = size.x * ratio;
    this.canvas.height = size.y * ratio;
    this.canvas.style.width = `${size.x}px`;
    this.canvas.style.height = `${size.y}px`;
    this.ratio = ratio;
  }

  setTracks(tracks) {
    this.tracks = tracks;
    this.redraw();
  }

  // Coalesce any number of updates into one draw per animation frame.
  redraw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const t0 = performance.now();
    const map = this.map;
    const size = map.getSize();
    if (this.canvas.style.width !== `${size.x}px`) this.resize();
    // The pane moves with the map while dragging; keep the canvas at the container's origin.
    L.DomUtil.setPosition(this.canvas, map.containerPointToLayerPoint([0, 0]));
    const ctx = this.ctx;
    ctx.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
    ctx.clearRect(0, 0, size.x, size.y);
    const drawn = [];
    // Each track at its copy nearest the view's centre, so a track just east of 180° shows
    // when the map is centred just west of it.
    const centre = map.getCenter().lng;
    const metresPerPixel = 40075016.686 * Math.cos((map.getCenter().lat * Math.PI) / 180)
      / (256 * 2 ** map.getZoom());
    for (const track of this.tracks) {
      const lon = track.lon + 360 * Math.round((centre - track.lon) / 360);
      const p = map.latLngToContainerPoint([track.lat, lon]);
      if (p.x < -20 || p.y < -20 || p.x > size.x + 20 || p.y > size.y + 20) continue;
      const sym = symbolFor(track.type);
      const generalized = String(track.uid).includes("::g-");
      if (generalized && track.ce < 9999999) {
        const r = track.ce / metresPerPixel;
        if (r > 6) {
          ctx.beginPath();
          ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
          ctx.setLineDash([3, 3]);
          ctx.strokeStyle = "rgba(226,232,240,.45)";
          ctx.lineWidth = 1;
          ctx.stroke();
          ctx.setLineDash([]);
        }
      }
      ctx.drawImage(sym.canvas, Math.round(p.x - sym.ax), Math.round(p.y - sym.ay));
      drawn.push({ x: p.x, y: p.y, track, sym, generalized });
    }
    const labels = [];
    if (drawn.length <= LABEL_LIMIT || map.getZoom() >= 8) {
      ctx.font = "11px system-ui, sans-serif";
      ctx.lineWidth = 3;
      ctx.strokeStyle = "rgba(11,22,32,.85)";
      const taken = new Grid(40);
      const order = drawn.slice().sort((a, b) => (b.track.party === this.party) - (a.track.party === this.party));
      for (const d of order) {
        const label = d.track.callsign || (d.generalized ? `≈ ${d.track.party}` : "");
        if (!label) continue;
        const x = d.x + d.sym.canvas.width - d.sym.ax + 2;
        const w = ctx.measureText(label).width + 2, h = 13;
        if (taken.hits(x, d.y - 8, w, h)) continue;
        taken.add(x, d.y - 8, w, h);
        ctx.fillStyle = d.generalized ? "#cbd5e1" : "#e2e8f0";
        ctx.strokeText(label, x, d.y + 4);
        ctx.fillText(label, x, d.y + 4);
        labels.push(label);
      }
    }
    this.labels = labels;
    this.drawn = drawn;
    const ms = performance.now() - t0;
    const s = this.stats;
    s.draws++;
    s.lastMs = ms;
    s.maxMs = Math.max(s.maxMs, ms);
    s.samples.push(ms);
    if (s.samples.length > 600) s.samples.shift();
  }

  hit(point, radius = 14) {
    let best = null, bestD = radius * radius;
    for (const d of this.drawn) {
      const dx = d.x - point.x, dy = d.y - point.y, dd = dx * dx + dy * dy;
      if (dd <= bestD) { best = d.track; bestD = dd; }
    }
    return best;
  }
}

// Boxes on the canvas, bucketed by cell, to find overlaps without testing every pair.
class Grid {
  constructor(cell) {
    this.cell = cell;
    this.buckets = new Map();
  }

  *cells(x, y, w, h) {
    const c = this.cell;
    for (let i = Math.floor(x / c); i <= Math.floor((x + w) / c); i++) {
      for (let j = Math.floor(y / c); j <= Math.floor((y + h) / c); j++) yield `${i},${j}`;
    }
  }

  add(x, y, w, h) {
    const box = { x, y, w, h };
    for (const key of this.cells(x, y, w, h)) {
      if (!this.buckets.has(key)) this.buckets.set(key, []);
      this.buckets.get(key).push(box);
    }
  }

  // Whether (x, y, w, h) overlaps a box already added.
  hits(x, y, w, h) {
    for (const key of this.cells(x, y, w, h)) {
      for (const b of this.buckets.get(key) || []) {
        if (x < b.x + b.w && b.x < x + w && y < b.y + b.h && b.y < y + h) return true;
      }
    }
    return false;
  }
}
