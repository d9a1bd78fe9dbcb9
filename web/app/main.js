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
import { fmtSpan, fmtTime, el } from "./util.js";

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

function tokenFromLocation() {
  // `/#token=…` lets a bookmark or the demo open a party's view directly; the fragment never
  // reaches the server, and is removed from the address bar at once.
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, "", location.pathname);
  return decodeURIComponent(match[1]);
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

  const map = L.map("map", {
    preferCanvas: true, zoomAnimation: false, worldCopyJump: true, minZoom: 2, maxZoom: 14,
  }).setView([35, 60], 3);
  L.control.scale({ imperial: false }).addTo(map);
  map.attributionControl.setPrefix("Leaflet · Natural Earth (world-atlas)");
  const tracks = new TrackLayer(map);
  const overlays = new Overlays(map, party);
  const panels = new Panels(api, party, map);
  if (me.signs) panels.enableSigning();
  const timeline = new History();
  page.perf = tracks.stats;

  map.on("click", (e) => {
    const t = tracks.hit(e.containerPoint);
    if (!t) return;
    const box = el("div");
    box.append(el("strong", {}, t.callsign || t.uid));
    for (const line of [`${t.party} ${t.type}`, `uid ${t.uid}`,
      `${t.lat.toFixed(4)}, ${t.lon.toFixed(4)}${t.hae < 9999999 ? `, ${Math.round(t.hae)} m` : ""}`,
      t.speed != null ? `${Math.round(t.speed)} m/s, ${Math.round(t.course ?? 0)}°` : "",
      `seen ${fmtTime(t.time)}, stale ${fmtTime(t.stale)}`]) {
      if (line) box.append(el("div", { className: "meta" }, line));
    }
    L.popup().setLatLng([t.lat, t.lon]).setContent(box).openOn(map);
  });

  // ---- the time slider -----------------------------------------------------------------
  const slider = $("time");
  slider.disabled = false;
  let offset = 0; // seconds before now; 0 = live
  slider.addEventListener("input", () => { offset = Number(slider.value); schedule(); });

  let drawnVersion = -1, drawnAt = 0, fitted = false, frame = 0;
  function render() {
    frame = 0;
    const now = Date.now() / 1000;
    const T = now + offset;
    $("time-label").textContent = offset === 0 ? "LIVE" : `−${fmtSpan(offset)} (${fmtTime(T)})`;
    drawnVersion = timeline.version;
    drawnAt = now;
    const state = timeline.at(T);
    const shown = [...(state.track || []), ...(state.position || [])];
    tracks.setTracks(shown);
    const counts = overlays.update(state);
    $("counts").textContent = `${shown.length} tracks · ${counts.airspace} areas · ${counts.conflict} conflicts · ${counts.launch} launch · ${counts.alert} alerts`;
    if (!fitted && (shown.length || counts.airspace)) {
      fitted = true;
      const pts = shown.map((t) => [t.lat, t.lon]);
      for (const have of overlays.layers.values()) {
        const b = have.layer.getBounds?.();
        if (b && b.isValid()) pts.push(b.getNorthEast(), b.getSouthWest());
      }
      const bounds = L.latLngBounds(pts);
      if (bounds.isValid()) map.fitBounds(bounds.pad(0.2), { maxZoom: 9 });
    }
    page.time = T;
  }
  function schedule() {
    if (!frame) frame = requestAnimationFrame(render);
  }
  page.snapshot = () => ({
    party,
    live: offset === 0,
    time: page.time,
    tracks: tracks.tracks.map((t) => ({
      uid: t.uid, callsign: t.callsign, party: t.party, type: t.type, sidc: sidcFor(t.type),
      lat: t.lat, lon: t.lon,
    })),
    counts: overlays.counts,
    hotline: panels.messages.map((m) => ({ id: m.id, from: m.from, to: m.to, acks: m.acks })),
  });
  page.setReplay = (seconds) => { offset = -Math.abs(seconds); slider.value = String(offset); render(); };

  // Once a second: staleness in live mode, moving deadlines, the slider label.
  setInterval(() => {
    const now = Date.now() / 1000;
    if (timeline.version !== drawnVersion || now - drawnAt >= 1) schedule();
    if (panels.messages.some((m) => m.pending.length)) panels.renderHotline();
  }, 1000);
  setInterval(() => timeline.prune(Date.now() / 1000), 60_000);

  const basemap = loadBasemap(map).catch((e) => { page.error = String(e); });
  await Promise.all([basemap, panels.refreshAll(), panels.recipients()]).catch((e) => {
    page.error = String(e);
  });

  api.live((items) => {
    const now = Date.now() / 1000;
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
