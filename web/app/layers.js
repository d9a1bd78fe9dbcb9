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

// What each item's detail says is read once by the hub (commonsky/hub/pagejson.py) and
// arrives typed: `geometry` is GeoJSON ([lon, lat]; a circle is a Point with `radius_m`, a
// route corridor a LineString with `width_m`), the extensions are plain objects. The page
// never parses the CoT detail XML.

function latLngs(coords) {
  return (coords || []).map(([lon, lat]) => [lat, lon]);
}

function popup(title, lines) {
  const box = el("div");
  box.append(el("strong", {}, title));
  for (const line of lines) if (line) box.append(el("div", { className: "meta" }, line));
  return box;
}

function airspaceLayer(item, own) {
  const a = item.airspace || {};
  const colour = partyColour(item.party, own);
  const what = a.item || (item.category === "site" ? "site" : "volume");
  const levels = a.floor_m != null || a.ceiling_m != null
    ? `${a.floor_m ?? "?"}–${a.ceiling_m ?? "?"} m`
    : a.floor_fl != null ? `FL${a.floor_fl}–FL${a.ceiling_fl}` : "";
  const sides = a.left_party ? `left ${a.left_party}, right ${a.right_party}` : "";
  const info = popup(`${item.callsign || item.uid}`, [
    `${item.party} ${what}${a.kind ? ` (${a.kind})` : ""}`, levels, sides,
    `until ${fmtTime(item.stale)}`,
  ]);
  const g = item.geometry;
  let layer;
  if (!g || g.type === "Point") {
    // Circles and sites; also a generalized drawing (details stripped): its approximate spot.
    const centre = g ? latLngs([g.coordinates])[0] : [item.lat, item.lon];
    layer = L.circle(centre, {
      radius: (g && g.radius_m) || 1000, color: colour, weight: what === "site" ? 2 : 1.5,
      fillOpacity: 0.12, dashArray: what === "site" ? "2 4" : null,
    });
  } else if (g.type === "Polygon") {
    layer = L.polygon(latLngs(g.coordinates[0]), { color: colour, weight: 1.5, fillOpacity: 0.12 });
  } else if (g.width_m == null) {
    layer = L.polyline(latLngs(g.coordinates), { color: colour, weight: 3, dashArray: "10 6" }); // a line
  } else {
    layer = L.polyline(latLngs(g.coordinates), { color: colour, weight: 6, opacity: 0.45 }); // route corridor
  }
  // For the tests: what was drawn, in the hub's terms.
  const shape = !g || g.type === "Point" ? "circle" : g.type === "Polygon" ? "polygon" : g.width_m == null ? "line" : "corridor";
  const vertices = !g || g.type === "Point" ? 1 : g.type === "Polygon" ? g.coordinates[0].length : g.coordinates.length;
  layer.area = { uid: item.uid, shape, vertices, radius_m: layer.getRadius ? layer.getRadius() : null };
  return layer.bindPopup(info);
}

// Evidence photos (b-i-x-i with CommonSky's evidence detail): the footprint (or the camera's
// position) with the thumbnail, who published it and when it was taken. A generalized one has
// only a coarse footprint: drawn dashed, no picture.
function imageryLayer(item, own) {
  const colour = partyColour(item.party, own);
  const ev = item.evidence;
  const ring = item.geometry && item.geometry.type === "Polygon" ? latLngs(item.geometry.coordinates[0]) : [];
  const box = el("div");
  box.append(el("strong", {}, ev ? `${item.party} photograph` : `${item.party} photograph (where and when only)`));
  if (item.thumbnail) {
    const img = el("img", { className: "thumb", alt: "thumbnail" });
    img.src = `data:image/jpeg;base64,${item.thumbnail}`;
    box.append(img);
  }
  const get = (name) => (ev ? ev[name] : null);
  for (const line of [
    get("captured") ? `taken ${get("captured")}` : `time ${fmtTime(item.time)}`,
    get("user") ? `published by ${item.party}/${get("user")} ${get("published") || ""}` : "",
    get("sha256") ? `sha256 ${get("sha256").slice(0, 16)}… (signed, C2PA)` : "",
  ]) if (line) box.append(el("div", { className: "meta" }, line));
  let layer;
  if (ring.length >= 4) {
    layer = L.polygon(ring, { color: colour, weight: 2, fillOpacity: 0.1, dashArray: ev ? null : "6 4" });
  } else {
    layer = L.circleMarker([item.lat, item.lon], { color: colour, radius: 7, weight: 2, fillOpacity: 0.5 });
  }
  layer.photo = { uid: item.uid, party: item.party, full: Boolean(ev), thumbnail: Boolean(item.thumbnail), corners: ring.length };
  return layer.bindPopup(box);
}

function conflictLayer(item) {
  const notice = item.notice;
  const text = item.remarks || "";
  const info = popup("CONFLICT", [text, notice && `with ${notice.other_party}`]);
  const style = { color: CONFLICT, weight: 2.5, fillColor: CONFLICT, fillOpacity: 0.35 };
  const layer = item.geometry
    ? L.geoJSON(item.geometry, { style, pointToLayer: (_f, ll) => L.circleMarker(ll, { ...style, radius: 9 }) })
    : L.circleMarker([item.lat, item.lon], { ...style, radius: 10 });
  // For the tests: what was drawn.
  layer.conflict = { uid: item.uid, other: notice?.other_party ?? null, area: item.geometry?.type ?? null };
  return layer.bindPopup(info);
}

function launchLayer(item) {
  const group = L.featureGroup();
  const fused = item.fused;
  if (fused) {
    const lines = [`from ${(fused.parties || []).join(", ")}`, `${fused.n_points} points`];
    const style = { color: LAUNCH, weight: 2, fillOpacity: 0.25 };
    if (fused.launch?.polygon) {
      L.polygon(latLngs(fused.launch.polygon), { ...style, dashArray: "4 3" }).addTo(group);
    }
    if (fused.impact?.polygon) L.polygon(latLngs(fused.impact.polygon), style).addTo(group);
    const a = fused.launch?.ellipse, b = fused.impact?.ellipse;
    if (a && b) L.polyline([[a.lat, a.lon], [b.lat, b.lon]], { color: LAUNCH, weight: 1.5, dashArray: "6 6" }).addTo(group);
    if (b) lines.push(`impact ${b.lat.toFixed(2)}, ${b.lon.toFixed(2)} ±${(b.semi_major_m / 1000).toFixed(1)} km`);
    group.bindPopup(popup(`Launch event ${fused.event_id}`, lines));
    return group;
  }
  const report = item.report;
  if (report && Array.isArray(report.points)) {
    // A raw sensor report this party may see: its observed points as a dotted trace.
    L.polyline(report.points.map((p) => [p.lat, p.lon]), { color: LAUNCH, weight: 2, dashArray: "1 5" })
      .bindPopup(popup(`Launch report ${report.report_id}`, [`${item.party}, ${report.points.length} points`]))
      .addTo(group);
  }
  return group;
}

function alertLayer(item) {
  const cap = item.cap;
  const group = L.featureGroup();
  const info = popup(`ALERT ${cap?.msgType || ""}`, [item.remarks || "", `from ${item.party}`]);
  group.bindPopup(info);
  L.circleMarker([item.lat, item.lon], { color: ALERT, radius: 6, weight: 2 }).addTo(group);
  // The warned areas come typed with the item (a GeoJSON MultiPolygon, [lon, lat]).
  const areas = item.geometry;
  const drawn = [];
  if (areas && areas.type === "MultiPolygon") {
    for (const polygon of areas.coordinates) {
      const ring = polygon[0].map(([lon, lat]) => [lat, lon]);
      L.polygon(ring, { color: ALERT, weight: 2, fillColor: ALERT, fillOpacity: 0.2 }).addTo(group);
      drawn.push(ring.length);
    }
  }
  group.alert = { uid: item.uid, identifier: cap?.identifier ?? null, msgType: cap?.msgType ?? null, areas: drawn };
  return group;
}

export class Overlays {
  constructor(map, party) {
    this.map = map;
    this.party = party;
    this.layers = new Map(); // uid -> {item, layer, kind}
    this.counts = {};
    this.photos = [];
    this.shapes = [];
    this.conflicts = [];
    this.alerts = [];
  }

  // `state` is History.at(T): items in force, by category.
  update(state) {
    const seen = new Set();
    const counts = { airspace: 0, conflict: 0, launch: 0, alert: 0, imagery: 0 };
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
    for (const item of state.imagery || []) take(item, "imagery", (i) => imageryLayer(i, this.party));
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
    this.photos = [...this.layers.values()].filter((h) => h.kind === "imagery").map((h) => h.layer.photo);
    this.shapes = [...this.layers.values()].filter((h) => h.kind === "airspace").map((h) => h.layer.area);
    this.conflicts = [...this.layers.values()].filter((h) => h.kind === "conflict").map((h) => h.layer.conflict);
    this.alerts = [...this.layers.values()].filter((h) => h.kind === "alert").map((h) => h.layer.alert);
    return counts;
  }
}
