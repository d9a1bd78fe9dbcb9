// The live map page: sign in with a party token, then show what the hub sends that party.
//
// Data flow: WebSocket items -> History (every snapshot, timestamped) -> the picture at the
// slider's time -> TrackLayer (canvas) + Overlays (areas, conflicts, launches, alerts).
// Side lists come from the REST API. The page never invents or fetches data of its own:
// what it shows is what /api/… and /api/ws returned for this token.

import { Api, ApiError } from "./api.js";
import { History } from "./history.js";
import { Overlays, loadBasemap } from "./layers.js";
import { Panels } from "./panels.js";
import { sidcFor } from "./sidc.js";
import { TrackLayer } from "./tracks.js";
import { HubClock, fmtSpan, fmtTime, el } from "./util.js";
import { areas, firstArea, framed, ownBox, parseBox, pointsOf } from "./view.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "commonsky.token";

// For the tests and the demo's screenshots: a read-only view of what is on the map.
const page = { state: "signed-out", error: "", snapshot: () => null, perf: null };
window.commonsky = page;

function setState(state, text) {
  page.state = state;
  document.body.dataset.state = state;
  const status = $("status");
  status.textContent = text;
  status.className = `status ${state === "live" ? "live" : state === "down" ? "down" : ""}`;
}

// `/#token=…&bbox=w,s,e,n` lets a bookmark or the demo open a party's view directly, framed
// on an area; the fragment never reaches the server, and is removed from the address bar.
const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
if (location.hash) history.replaceState(null, "", location.pathname);
const startBox = parseBox(fragment.get("bbox"));

function tokenFromLocation() {
  return fragment.get("token");
}

async function signIn(token) {
  const api = new Api(token);
  try {
    const me = await api.get("/api/me");
    sessionStorage.setItem(TOKEN_KEY, token);
    return { api, me };
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    const reason = e instanceof ApiError && e.status === 401
      ? `Token refused by the hub (${e.message}).`
      : `Cannot reach the hub: ${e.message}`;
    page.error = reason;
    $("signin-error").textContent = reason;
    setState("refused", "signed out");
    return null;
  }
}

function askForToken() {
  const dialog = $("signin");
  if (!dialog.open) dialog.showModal();
  $("signin-form").onsubmit = async (event) => {
    event.preventDefault();
    const session = await signIn($("token").value.trim());
    if (session) {
      dialog.close();
      start(session);
    }
  };
}

async function start({ api, me }) {
  const party = me.party;
  $("party").textContent = `${party} — ${me.name}`;
  const signout = $("signout");
  signout.hidden = false;
  signout.onclick = () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); };
  setState("loading", "loading…");
  const clock = new HubClock(me.clock);

  const map = L.map("map", {
    preferCanvas: true, zoomAnimation: false, worldCopyJump: true, minZoom: 2, maxZoom: 14,
  }).setView([35, 60], 3);
  L.control.scale({ imperial: false }).addTo(map);
  map.attributionControl.setPrefix("Leaflet · Natural Earth (world-atlas)");
  const tracks = new TrackLayer(map, party);
  const overlays = new Overlays(map, party);
  const panels = new Panels(api, party, map, clock, me.country);
  if (me.signs) panels.enableSigning();
  const timeline = new History();
  page.perf = tracks.stats;

  map.on("click", (e) => {
    const t = tracks.hit(e.containerPoint);
    if (!t) return;
    const box = el("div");
    const generalized = String(t.uid).includes("::g-");
    box.append(el("strong", {}, t.callsign || (generalized ? `${t.party} track (generalized)` : t.uid)));
    for (const line of [`${t.party} ${t.type}`, t.via ? `from hub ${t.via} (federation link)` : "",
      generalized ? "" : `uid ${t.uid}`,
      generalized ? `position to a ${Math.round((t.ce || 0) / 1000)} km cell; no details shared` : "",
      `${t.lat.toFixed(4)}, ${t.lon.toFixed(4)}${t.hae < 9999999 ? `, ${Math.round(t.hae)} m` : ""}`,
      t.speed != null ? `${Math.round(t.speed)} m/s, ${Math.round(t.course ?? 0)}°` : "",
      `seen ${fmtTime(t.time)}, stale ${fmtTime(t.stale)}`]) {
      if (line) box.append(el("div", { className: "meta" }, line));
    }
    L.popup().setLatLng([t.lat, t.lon]).setContent(box).openOn(map);
  });

  // ---- where to look ---------------------------------------------------------------------
  // A bbox in the link frames the first view; otherwise the area with most of the party's own
  // items, framed once the current picture has arrived (and again 2 s later, as the rest of
  // the replay lands) unless the user has moved the map by then.
  let userMoved = false, fittedOnce = false, areaList = [];
  map.on("dragstart", () => { userMoved = true; });
  map.getContainer().addEventListener("wheel", () => { userMoved = true; }, { passive: true });
  const select = $("area"), fitMine = $("fit-mine");
  if (startBox) {
    map.fitBounds(framed(startBox, 0.1), { animate: false });
    userMoved = true;
  }
  function goTo(box) {
    if (box) map.fitBounds(framed(box), { animate: false, maxZoom: 9 });
  }
  function refreshAreas(state) {
    const points = pointsOf(state, party);
    areaList = areas(points);
    const current = select.value;
    select.replaceChildren(el("option", { value: "all" }, `everything (${points.length})`),
      ...areaList.map((a, i) => el("option", { value: String(i) }, `${a.name} (${a.count})`)));
    if ([...select.options].some((o) => o.value === current)) select.value = current;
    select.parentElement.hidden = areaList.length < 1;
    fitMine.hidden = !points.some((p) => p.own);
    return points;
  }
  select.addEventListener("change", () => {
    userMoved = true;
    if (select.value === "all") {
      const all = areaList.reduce((b, a) => ({
        west: Math.min(b.west, a.west), east: Math.max(b.east, a.east),
        south: Math.min(b.south, a.south), north: Math.max(b.north, a.north),
      }), { west: Infinity, east: -Infinity, south: Infinity, north: -Infinity });
      if (areaList.length) goTo(all);
    } else {
      goTo(areaList[Number(select.value)]);
    }
  });
  fitMine.addEventListener("click", () => {
    userMoved = true;
    goTo(ownBox(pointsOf(timeline.at(clock.now()), party)));
  });
  function autoFit() {
    if (userMoved) return;
    const points = refreshAreas(timeline.at(clock.now()));
    const best = firstArea(areaList);
    if (best && points.length) {
      goTo(best);
      select.value = String(areaList.indexOf(best));
    }
  }

  // ---- the time slider -----------------------------------------------------------------
  const slider = $("time");
  slider.disabled = false;
  let offset = 0; // seconds before now; 0 = live
  slider.addEventListener("input", () => { offset = Number(slider.value); schedule(); });

  let drawnVersion = -1, drawnAt = 0, frame = 0;
  function render() {
    frame = 0;
    const now = clock.now();
    const T = now + offset;
    $("time-label").textContent = offset === 0 ? "LIVE" : `−${fmtSpan(offset)} (${fmtTime(T)})`;
    drawnVersion = timeline.version;
    drawnAt = performance.now();
    const state = timeline.at(T);
    const shown = [...(state.track || []), ...(state.position || [])];
    tracks.setTracks(shown);
    const counts = overlays.update(state);
    $("counts").textContent = `${shown.length} tracks · ${counts.airspace} areas · ${counts.conflict} conflicts · ${counts.launch} launch · ${counts.alert} alerts · ${counts.imagery} photos`;
    if (!fittedOnce && (shown.length || counts.airspace)) {
      fittedOnce = true;
      autoFit();
      setTimeout(autoFit, 2000);
    }
    page.time = T;
  }
  function schedule() {
    if (!frame) frame = requestAnimationFrame(render);
  }
  function showClock() {
    const box = $("clock");
    const label = clock.label();
    box.replaceChildren(fmtTime(clock.now()));
    if (label) box.append(el("span", { className: "scenario" }, label));
  }
  page.snapshot = () => ({
    party,
    live: offset === 0,
    time: page.time,
    tracks: tracks.tracks.map((t) => ({
      uid: t.uid, callsign: t.callsign, party: t.party, type: t.type, sidc: sidcFor(t.type),
      lat: t.lat, lon: t.lon,
    })),
    labels: tracks.labels.slice(),
    counts: overlays.counts,
    photos: overlays.photos.slice(),
    shapes: overlays.shapes.slice(),
    conflicts: overlays.conflicts.slice(),
    alerts: overlays.alerts.slice(),
    hotline: panels.messages.map((m) => ({ id: m.id, from: m.from, to: m.to, acks: m.acks })),
    recipients: panels.recipientIds.slice(),
    areas: areaList.map((a) => ({ ...a })),
  });
  page.bounds = () => {
    const b = map.getBounds();
    return { west: b.getWest(), south: b.getSouth(), east: b.getEast(), north: b.getNorth(), zoom: map.getZoom() };
  };
  page.setView = (lat, lon, zoom) => { userMoved = true; map.setView([lat, lon], zoom, { animate: false }); };
  page.project = (lat, lon) => {
    const p = map.latLngToContainerPoint([lat, lon]);
    const r = map.getContainer().getBoundingClientRect();
    return { x: p.x + r.left, y: p.y + r.top };
  };
  page.setReplay = (seconds) => { offset = -Math.abs(seconds); slider.value = String(offset); render(); };

  // Once a second: staleness in live mode, moving deadlines, the slider label, the clock.
  setInterval(() => {
    if (timeline.version !== drawnVersion || performance.now() - drawnAt >= 1000) schedule();
    if (panels.messages.some((m) => m.pending.length)) panels.renderHotline();
    showClock();
  }, 1000);
  showClock();
  // The hub's clock may change pace (a demo's scenario clock drops to real time at the end).
  setInterval(() => {
    api.get("/api/me").then((m) => clock.set(m.clock)).catch(() => {});
    refreshAreas(timeline.at(clock.now()));
  }, 10_000);
  setInterval(() => timeline.prune(clock.now()), 60_000);

  const basemap = loadBasemap(map)
    .then(() => { page.basemap = true; })
    .catch((e) => { page.error = String(e); });
  await Promise.all([basemap, panels.refreshAll(), panels.recipients()]).catch((e) => {
    page.error = String(e);
  });
  // Country names need the basemap: name the areas again now that it is here.
  refreshAreas(timeline.at(clock.now()));

  api.live((items) => {
    const now = clock.now();
    const kinds = new Set();
    for (const item of items) {
      // A delete names the item it removes as this party knows it; the delete itself is
      // not something to draw.
      if (item.type === "t-x-d-d") timeline.remove(item.deletes, item.time, now);
      else timeline.add(item, now);
      kinds.add(item.category);
    }
    if (kinds.has("hotline")) panels.soon("hotline", () => panels.hotline());
    if (kinds.has("conflict")) panels.soon("conflict", () => panels.conflicts());
    if (kinds.has("launch")) panels.soon("launch", () => panels.launches());
    if (kinds.has("alert")) panels.soon("alert", () => panels.alerts());
    schedule();
  }, (state) => setState(state, state === "live" ? `live as ${party}` : "disconnected — retrying"));
}

const saved = tokenFromLocation() || sessionStorage.getItem(TOKEN_KEY);
if (saved) {
  signIn(saved).then((session) => (session ? start(session) : askForToken()));
} else {
  askForToken();
}
