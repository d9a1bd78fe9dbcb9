// Tracks on one canvas: with thousands of live tracks, one DOM marker each would make every
// update a layout storm. Instead each frame blits a cached symbol per track (see sidc.js)
// and draws its callsign; a click is hit-tested against the positions of the last frame.

import { symbolFor } from "./sidc.js";

const LABEL_LIMIT = 600; // above this many tracks in view, callsigns only from zoom 8 up

export class TrackLayer {
  constructor(map) {
    this.map = map;
    this.tracks = [];
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
    for (const track of this.tracks) {
      const p = map.latLngToContainerPoint([track.lat, track.lon]);
      if (p.x < -20 || p.y < -20 || p.x > size.x + 20 || p.y > size.y + 20) continue;
      const sym = symbolFor(track.type);
      ctx.drawImage(sym.canvas, Math.round(p.x - sym.ax), Math.round(p.y - sym.ay));
      drawn.push({ x: p.x, y: p.y, track, sym });
    }
    if (drawn.length <= LABEL_LIMIT || map.getZoom() >= 8) {
      ctx.font = "11px system-ui, sans-serif";
      ctx.lineWidth = 3;
      ctx.strokeStyle = "rgba(11,22,32,.85)";
      ctx.fillStyle = "#e2e8f0";
      for (const d of drawn) {
        const label = d.track.callsign || "";
        if (!label) continue;
        const x = d.x + d.sym.canvas.width - d.sym.ax + 2;
        ctx.strokeText(label, x, d.y + 4);
        ctx.fillText(label, x, d.y + 4);
      }
    }
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
