// Everything on the map that is not a track: the offline basemap, airspace volumes, lines and
// sites, conflicts (red, with their overlap), fused launch events (ellipses) and regions
// under alert. Layers are keyed by item uid and rebuilt only when that uid's snapshot
// changes, so a replay step or a live update touches only what moved.

import { el, fmtTime } from "./util.js";

const OWN = "#38bdf8";
const PALETTE = ["#a78bfa", "#f472b6", "#facc15", "#34d399", "#fb923c", "#60a5fa", "#c084fc"];
const CONFLICT = "#ef4444";
const LAUNCH = "#f97316";
const ALERT = "#e11d48";

export function partyColour(party, own) {
  if (party === own) return OWN;
  let h = 0;
  for (const c of String(party)) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

// Natural Earth rings that touch ±180° (Russia, Fiji, Antarctica…) jump from one edge of the
// world to the other between two vertices; drawn as they are, each jump is a stroke (and, for a
// ring, a filled band) across the whole map. So every line is made continuous — a step of more
// than 180° is the same line crossing the antimeridian — and a ring that goes once around the
// world (Antarctica) is closed over its pole. The unwrapped world is then drawn three times,
// 360° apart, so that the land east of 180° (and west of −180°) is there when the map is panned.
export function unwrapLine(coords) {
  const out = [];
  let shift = 0, prev = null;
  for (const [lon, lat] of coords) {
    if (prev !== null) {
      const step = lon + shift - prev;
      if (step > 180) shift -= 360;
      else if (step < -180) shift += 360;
    }
    prev = lon + shift;
    out.push([prev, lat]);
  }
  return out;
}

export function unwrapRing(ring) {
  const out = unwrapLine(ring);
  if (out.length < 2) return out;
  const drift = out[out.length - 1][0] - out[0][0];
  if (Math.abs(drift) > 180) {
    const pole = out.reduce((sum, p) => sum + p[1], 0) < 0 ? -90 : 90;
    out.push([out[out.length - 1][0], pole], [out[0][0], pole], [out[0][0], out[0][1]]);
  }
  return out;
}

function unwrapGeometry(g) {
  if (!g) return g;
  switch (g.type) {
    case "Polygon": return { type: g.type, coordinates: g.coordinates.map(unwrapRing) };
    case "MultiPolygon": return { type: g.type, coordinates: g.coordinates.map((p) => p.map(unwrapRing)) };
    case "LineString": return { type: g.type, coordinates: unwrapLine(g.coordinates) };
    case "MultiLineString": return { type: g.type, coordinates: g.coordinates.map(unwrapLine) };
    case "GeometryCollection": return { type: g.type, geometries: g.geometries.map(unwrapGeometry) };
    default: return g;
  }
}

function unwrapped(geojson) {
  if (geojson.type === "FeatureCollection") {
    return { ...geojson, features: geojson.features.map((f) => ({ ...f, geometry: unwrapGeometry(f.geometry) })) };
  }
  if (geojson.type === "Feature") return { ...geojson, geometry: unwrapGeometry(geojson.geometry) };
  return unwrapGeometry(geojson);
}

// Countries, for naming where things are ("Syria", "Japan"): [{name, bbox, rings}].
const countries = [];

function ringsOf(geometry) {
  if (!geometry) return [];
  if (geometry.type === "Polygon") return [geometry.coordinates];
  if (geometry.type === "MultiPolygon") return geometry.coordinates;
  return [];
}

function insideRing(ring, lon, lat) {
  let inside = false;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const [xi, yi] = ring[i], [xj, yj] = ring[j];
    if ((yi > lat) !== (yj > lat) && lon < ((xj - xi) * (lat - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

// The Natural Earth name of the country at (lat, lon), or null (sea, or basemap not loaded).
export function countryAt(lat, lon) {
  for (const c of countries) {
    for (const shift of [0, 360, -360]) {
      const x = lon + shift;
      if (x < c.bbox[0] || x > c.bbox[2] || lat < c.bbox[1] || lat > c.bbox[3]) continue;
      for (const polygon of c.polygons) {
        if (insideRing(polygon[0], x, lat) && !polygon.slice(1).some((hole) => insideRing(hole, x, lat))) {
          return c.name;
        }
      }
    }
  }
  return null;
}

export async function loadBasemap(map) {
  // Natural Earth 1:50m countries (world-atlas), turned into GeoJSON in the browser.
  const response = await fetch("/vendor/countries-50m.json");
  if (!response.ok) throw new Error(`basemap: HTTP ${response.status}`);
  const topo = await response.json();
  const pane = map.createPane("basemap");
  pane.style.zIndex = 200;
  const renderer = L.canvas({ pane, padding: 0.5 });
  const land = unwrapped(topojson.feature(topo, topo.objects.land));
  const borders = unwrapped(topojson.mesh(topo, topo.objects.countries, (a, b) => a !== b));
  for (const offset of [-360, 0, 360]) {
    const coordsToLatLng = (c) => L.latLng(c[1], c[0] + offset);
    L.geoJSON(land, {
      pane, renderer, interactive: false, coordsToLatLng,
      style: { fillColor: "#1b2a35", fillOpacity: 1, color: "#4d6a80", weight: 0.9 },
    }).addTo(map);
    L.geoJSON(borders, {
      pane, renderer, interactive: false, coordsToLatLng,
      style: { color: "#3f586b", weight: 0.7, dashArray: "4 3", fill: false },
    }).addTo(map);
  }
  for (const feature of unwrapped(topojson.feature(topo, topo.objects.countries)).features) {
    const polygons = ringsOf(feature.geometry);
    if (!polygons.length || !feature.properties?.name) continue;
    let w = Infinity, s = Infinity, e = -Infinity, n = -Infinity;
    for (const polygon of polygons) {
      for (const [x, y] of polygon[0]) {
        if (x < w) w = x;
        if (x > e) e = x;
        if (y < s) s = y;
        if (y > n) n = y;
      }
    }
    countries.push({ name: feature.properties.name, bbox: [w, s, e, n], polygons });
  }
}

const parsed = new WeakMap();
export function detailOf(item) {
  let doc = parsed.get(item);
  if (doc === undefined) {
    // DOMParser in XML mode builds an inert document: nothing in it runs or loads.
    const xml = new DOMParser().parseFromString(`<detail>${item.detail || ""}</detail>`, "application/xml");
    doc = xml.getElementsByTagName("parsererror").length ? null : xml.documentElement;
    parsed.set(item, doc);
  }
  return doc;
}

function child(doc, name) {
  return doc ? doc.getElementsByTagName(name)[0] || null : null;
}

function jsonIn(doc, name) {
  const node = child(doc, name);
  if (!node || !node.textContent.trim()) return null;
  try { return JSON.parse(node.textContent); } catch { return null; }
}

function remarks(doc) {
  const node = child(doc, "remarks");
  return node ? node.textContent : "";
}

// Vertices of a drawing: <link point="lat,lon[,hae]"/> in order.
function vertices(doc) {
  if (!doc) return [];
  const out = [];
  for (const link of doc.getElementsByTagName("link")) {
    const raw = link.getAttribute("point");
    if (!raw) continue;
    const [lat, lon] = raw.split(",").map(Number);
    if (Number.isFinite(lat) && Number.isFinite(lon)) out.push([lat, lon]);
  }
  return out;
}

function popup(title, lines) {
  const box = el("div");
  box.append(el("strong", {}, title));
  for (const line of lines) if (line) box.append(el("div", { className: "meta" }, line));
  return box;
}

function airspaceLayer(item, own) {
  const doc = detailOf(item);
  const ext = child(doc, "csky_airspace");
  const attr = (name) => (ext ? ext.getAttribute(name) : null);
  const colour = partyColour(item.party, own);
  const what = attr("item") || (item.category === "site" ? "site" : "volume");
  const levels = attr("floor_m") || attr("ceiling_m")
    ? `${attr("floor_m") ?? "?"}–${attr("ceiling_m") ?? "?"} m`
    : attr("floor_fl") ? `FL${attr("floor_fl")}–FL${attr("ceiling_fl")}` : "";
  const sides = attr("left_party") ? `left ${attr("left_party")}, right ${attr("right_party")}` : "";
  const info = popup(`${item.callsign || item.uid}`, [
    `${item.party} ${what}${attr("kind") ? ` (${attr("kind")})` : ""}`, levels, sides,
    `until ${fmtTime(item.stale)}`,
  ]);
  const pts = vertices(doc);
  let layer;
  const radius = Number(attr("radius_m")) || Number(child(doc, "ellipse")?.getAttribute("major"));
  if (item.type.startsWith("u-d-c") || item.type.startsWith("u-d-p") || item.type.startsWith("b-m-p-s-p-i") || pts.length < 2) {
    // Circles and sites; also a generalized drawing (details stripped): its approximate spot.
    const r = radius || (pts.length < 2 && item.ce < 9999999 ? item.ce : 1000);
    layer = L.circle([item.lat, item.lon], {
      radius: r, color: colour, weight: what === "site" ? 2 : 1.5, fillOpacity: 0.12,
      dashArray: what === "site" ? "2 4" : null,
    });
  } else if (pts.length >= 4 && pts[0][0] === pts[pts.length - 1][0] && pts[0][1] === pts[pts.length - 1][1]) {
    layer = L.polygon(pts, { color: colour, weight: 1.5, fillOpacity: 0.12 });
  } else if (what === "line") {
    layer = L.polyline(pts, { color: colour, weight: 3, dashArray: "10 6" });
  } else {
    layer = L.polyline(pts, { color: colour, weight: 6, opacity: 0.45 }); // route corridor
  }
  return layer.bindPopup(info);
}

function conflictLayer(item) {
  const doc = detailOf(item);
  const notice = jsonIn(doc, "csky_conflict");
  const text = remarks(doc);
  const info = popup("CONFLICT", [text, notice && `with ${notice.other_party}`]);
  const style = { color: CONFLICT, weight: 2.5, fillColor: CONFLICT, fillOpacity: 0.35 };
  if (notice && notice.geometry) {
    return L.geoJSON(notice.geometry, {
      style, pointToLayer: (_f, ll) => L.circleMarker(ll, { ...style, radius: 9 }),
    }).bindPopup(info);
  }
  return L.circleMarker([item.lat, item.lon], { ...style, radius: 10 }).bindPopup(info);
}

function ringOf(lonlat) {
  return (lonlat || []).map(([lon, lat]) => [lat, lon]);
}

function launchLayer(item) {
  const doc = detailOf(item);
  const group = L.featureGroup();
  const fused = jsonIn(doc, "csky_fused");
  if (fused) {
    const lines = [`from ${(fused.parties || []).join(", ")}`, `${fused.n_points} points`];
    const style = { color: LAUNCH, weight: 2, fillOpacity: 0.25 };
    if (fused.launch?.polygon) {
      L.polygon(ringOf(fused.launch.polygon), { ...style, dashArray: "4 3" }).addTo(group);
    }
    if (fused.impact?.polygon) L.polygon(ringOf(fused.impact.polygon), style).addTo(group);
    const a = fused.launch?.ellipse, b = fused.impact?.ellipse;
    if (a && b) L.polyline([[a.lat, a.lon], [b.lat, b.lon]], { color: LAUNCH, weight: 1.5, dashArray: "6 6" }).addTo(group);
    if (b) lines.push(`impact ${b.lat.toFixed(2)}, ${b.lon.toFixed(2)} ±${(b.semi_major_m / 1000).toFixed(1)} km`);
    group.bindPopup(popup(`Launch event ${fused.event_id}`, lines));
    return group;
  }
  const report = jsonIn(doc, "csky_launch");
  if (report && Array.isArray(report.points)) {
    // A raw sensor report this party may see: its observed points as a dotted trace.
    L.polyline(report.points.map((p) => [p.lat, p.lon]), { color: LAUNCH, weight: 2, dashArray: "1 5" })
      .bindPopup(popup(`Launch report ${report.report_id}`, [`${item.party}, ${report.points.length} points`]))
      .addTo(group);
  }
  return group;
}

const capAreas = new Map(); // CAP identifier -> Promise<[[lat, lon], ...][]>

function fetchCapAreas(identifier) {
  let promise = capAreas.get(identifier);
  if (!promise) {
    promise = fetch(`/cap/alerts/${encodeURIComponent(identifier)}.xml`)
      .then((r) => (r.ok ? r.text() : ""))
      .then((text) => {
        if (!text) return [];
        const doc = new DOMParser().parseFromString(text, "application/xml");
        return [...doc.getElementsByTagNameNS("*", "polygon")].map((node) =>
          node.textContent.trim().split(/\s+/).map((pair) => pair.split(",").map(Number)));
      })
      .catch(() => []);
    capAreas.set(identifier, promise);
  }
  return promise;
}

function alertLayer(item) {
  const doc = detailOf(item);
  const cap = child(doc, "csky_cap");
  const identifier = cap ? cap.getAttribute("identifier") : null;
  const group = L.featureGroup();
  const info = popup(`ALERT ${cap?.getAttribute("msgType") || ""}`, [remarks(doc), `from ${item.party}`]);
  group.bindPopup(info);
  L.circleMarker([item.lat, item.lon], { color: ALERT, radius: 6, weight: 2 }).addTo(group);
  if (identifier) {
    fetchCapAreas(identifier).then((rings) => {
      for (const ring of rings) {
        L.polygon(ring, { color: ALERT, weight: 2, fillColor: ALERT, fillOpacity: 0.2 }).addTo(group);
      }
    });
  }
  return group;
}

export class Overlays {
  constructor(map, party) {
    this.map = map;
    this.party = party;
    this.layers = new Map(); // uid -> {item, layer, kind}
    this.counts = {};
  }

  // `state` is History.at(T): items in force, by category.
  update(state) {
    const seen = new Set();
    const counts = { airspace: 0, conflict: 0, launch: 0, alert: 0 };
    const take = (item, kind, build) => {
      seen.add(item.uid);
      counts[kind]++;
      const have = this.layers.get(item.uid);
      if (have && have.item === item) return;
      if (have) have.layer.remove();
      const layer = build(item);
      layer.addTo(this.map);
      this.layers.set(item.uid, { item, layer, kind });
    };
    for (const item of [...(state.airspace || []), ...(state.site || [])]) {
      take(item, "airspace", (i) => airspaceLayer(i, this.party));
    }
    for (const item of state.conflict || []) {
      // The hub sends each notice twice: as JSON (t-x-csky-conflict) and as a TAK drawing of
      // the overlap (u-d-f) for TAK clients; the JSON one carries everything we draw.
      if (item.type.startsWith("t-x-csky-conflict")) take(item, "conflict", conflictLayer);
    }
    for (const item of state.launch || []) take(item, "launch", launchLayer);
    for (const item of state.alert || []) take(item, "alert", alertLayer);
    for (const [uid, have] of this.layers) {
      if (!seen.has(uid)) {
        have.layer.remove();
        this.layers.delete(uid);
      }
    }
    // Conflicts on top of everything else drawn here.
    for (const have of this.layers.values()) if (have.kind === "conflict") have.layer.bringToFront?.();
    this.counts = counts;
    return counts;
  }
}
