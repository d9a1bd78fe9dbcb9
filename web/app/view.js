// Where to look. One hub can carry several situations at once (an exercise in Syria, another
// over Korea): a view framed on everything a party sees can be half the world. So what the
// party sees is grouped into areas — items within a few degrees of each other — each named by
// the country most of its items lie in. The first view is the area with most of the party's
// own items (or, having none, most items); the header's selector moves between areas, and
// "fit mine" frames the party's own items.

import { countryAt } from "./layers.js";

const CELL_DEG = 4; // items in touching 4° cells belong to one area
const MIN_SPAN_DEG = 4; // never frame less than this: enough coastline to say where it is

// Points worth framing: positions of everything shown, except items the hub places at 0,0
// (hotline messages carry no position).
export function pointsOf(state, party) {
  const out = [];
  for (const [category, items] of Object.entries(state)) {
    if (category === "hotline") continue;
    for (const item of items) {
      if (!Number.isFinite(item.lat) || !Number.isFinite(item.lon)) continue;
      if (item.lat === 0 && item.lon === 0) continue;
      out.push({ lat: item.lat, lon: item.lon, own: item.party === party });
    }
  }
  return out;
}

// Areas, largest first: [{name, count, own, west, south, east, north}]. Longitudes of an area
// that straddles 180° are kept continuous (east may exceed 180).
export function areas(points) {
  const columns = Math.round(360 / CELL_DEG);
  const cells = new Map(); // "row,col" -> points
  for (const p of points) {
    const row = Math.floor(p.lat / CELL_DEG);
    const col = ((Math.floor(p.lon / CELL_DEG) % columns) + columns) % columns;
    const key = `${row},${col}`;
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(p);
  }
  const seen = new Set();
  const out = [];
  for (const start of cells.keys()) {
    if (seen.has(start)) continue;
    seen.add(start);
    const queue = [start];
    const members = [];
    while (queue.length) {
      const key = queue.pop();
      members.push(...cells.get(key));
      const [row, col] = key.split(",").map(Number);
      for (let dr = -1; dr <= 1; dr++) {
        for (let dc = -1; dc <= 1; dc++) {
          const next = `${row + dr},${(col + dc + columns) % columns}`;
          if (cells.has(next) && !seen.has(next)) {
            seen.add(next);
            queue.push(next);
          }
        }
      }
    }
    out.push(describe(members));
  }
  return out.sort((a, b) => b.count - a.count);
}

function describe(members) {
  const ref = members[0].lon;
  let west = Infinity, east = -Infinity, south = Infinity, north = -Infinity, own = 0;
  for (const p of members) {
    const lon = p.lon + 360 * Math.round((ref - p.lon) / 360); // continuous across 180°
    west = Math.min(west, lon); east = Math.max(east, lon);
    south = Math.min(south, p.lat); north = Math.max(north, p.lat);
    if (p.own) own++;
  }
  return { name: nameOf(members), count: members.length, own, west, south, east, north };
}

// The country most of the area's items are in (a sample of them), else its centre.
function nameOf(members) {
  const votes = new Map();
  const step = Math.max(1, Math.floor(members.length / 40));
  for (let i = 0; i < members.length; i += step) {
    const name = countryAt(members[i].lat, members[i].lon);
    if (name) votes.set(name, (votes.get(name) || 0) + 1);
  }
  let best = null, most = 0;
  for (const [name, n] of votes) if (n > most) { best = name; most = n; }
  if (best) return best;
  const lat = members.reduce((s, p) => s + p.lat, 0) / members.length;
  const lon = members.reduce((s, p) => s + p.lon, 0) / members.length;
  // At sea: name the nearest coast within a few degrees ("off Japan").
  for (const r of [1, 2, 3, 4]) {
    for (let a = 0; a < 360; a += 30) {
      const rad = (a * Math.PI) / 180;
      const near = countryAt(lat + r * Math.cos(rad), lon + r * Math.sin(rad));
      if (near) return `off ${near}`;
    }
  }
  return `${Math.abs(lat).toFixed(1)}°${lat < 0 ? "S" : "N"} ${Math.abs(lon).toFixed(1)}°${lon < 0 ? "W" : "E"}`;
}

// Leaflet bounds for a box, padded, and never smaller than MIN_SPAN_DEG on a side.
export function framed({ west, south, east, north }, pad = 0.15) {
  const grow = (lo, hi) => {
    const span = Math.max(hi - lo, 0) * (1 + 2 * pad);
    const want = Math.max(span, MIN_SPAN_DEG);
    const mid = (lo + hi) / 2;
    return [mid - want / 2, mid + want / 2];
  };
  const [s, n] = grow(south, north);
  const [w, e] = grow(west, east);
  return L.latLngBounds([Math.max(-85, s), w], [Math.min(85, n), e]);
}

// The box around the party's own points, or null when it has none.
export function ownBox(points) {
  const own = points.filter((p) => p.own);
  if (!own.length) return null;
  // The largest area of its own items: its items elsewhere are one click away in the selector.
  return areas(own)[0];
}

// The area the first view shows: most of the party's own items, else most items.
export function firstArea(list) {
  if (!list.length) return null;
  const withOwn = list.filter((a) => a.own > 0).sort((a, b) => b.own - a.own);
  return withOwn[0] || list[0];
}

// "#token=…&bbox=w,s,e,n" -> {west, south, east, north}, or null.
export function parseBox(text) {
  if (!text) return null;
  const v = text.split(",").map(Number);
  if (v.length !== 4 || !v.every(Number.isFinite)) return null;
  const [west, south, east, north] = v;
  if (south >= north || south < -90 || north > 90) return null;
  return { west, south, east: east < west ? east + 360 : east, north };
}
