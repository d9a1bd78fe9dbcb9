// Client-side history of received items, for the replay slider.
//
// Every item the WebSocket delivers is kept as a snapshot with its time; the picture at time T
// is, for each uid, the latest snapshot at or before T, if it is not stale at T. Only what the
// hub sent this party is ever stored, so a replay can show nothing the party was not given.
//
// Bounds (so a long-open page does not grow without limit): snapshots older than `windowS`
// are dropped (keeping the last one per uid, which may still be in force); a uid keeps at most
// `perUid` snapshots; live tracks are thinned to one snapshot per `thinS` seconds (the newest
// replaces the previous one inside that interval), which is plenty to replay hours.

const KEEP = ["uid", "type", "category", "party", "time", "stale", "lat", "lon", "hae", "ce",
  "callsign", "speed", "course", "detail", "seq",
  // The typed fields the hub computes for what the map draws (commonsky/hub/pagejson.py).
  "geometry", "airspace", "evidence", "thumbnail", "notice", "fused", "report", "cap", "remarks"];
const LIVE = new Set(["track", "position"]);

export class History {
  constructor({ windowS = 3 * 3600, perUid = 400, thinS = 10 } = {}) {
    this.windowS = windowS;
    this.perUid = perUid;
    this.thinS = thinS;
    this.byUid = new Map(); // uid -> [{t, item}], ascending t
    this.version = 0; // bumped on every change; renderers compare it
  }

  add(raw, receivedAt) {
    if (!raw || typeof raw.uid !== "string") return;
    const item = {};
    for (const k of KEEP) if (k in raw) item[k] = raw[k];
    if (LIVE.has(item.category)) delete item.detail; // not shown; saves memory at scale
    // The hub's time, unless it is ahead of our clock (then when we got it).
    const t = Math.min(Number.isFinite(item.time) ? item.time : receivedAt, receivedAt);
    let list = this.byUid.get(item.uid);
    if (!list) this.byUid.set(item.uid, (list = []));
    const last = list[list.length - 1];
    if (last && last.item.time === item.time && last.item.stale === item.stale
        && last.item.lat === item.lat && last.item.lon === item.lon && last.item.detail === item.detail) {
      return; // a replay of what we have (reconnect)
    }
    const snap = { t: Math.max(t, last ? last.t : -Infinity), item };
    if (last && LIVE.has(item.category) && list.length > 1 && snap.t - list[list.length - 2].t < this.thinS) {
      list[list.length - 1] = snap;
    } else {
      list.push(snap);
      if (list.length > this.perUid) list.splice(0, list.length - this.perUid);
    }
    this.version++;
  }

  // The hub deleted `uid` (a `t-x-d-d`, CoT's delete) at `time`: from then on it is not in
  // the picture; a replay to before then still shows it.
  remove(uid, time, receivedAt) {
    const list = this.byUid.get(uid);
    if (!list || !list.length) return;
    const last = list[list.length - 1];
    const t = Math.max(Math.min(Number.isFinite(time) ? time : receivedAt, receivedAt), last.t);
    list.push({ t, item: { ...last.item, stale: t } });
    this.version++;
  }

  prune(now) {
    const cutoff = now - this.windowS;
    for (const [uid, list] of this.byUid) {
      let i = 0;
      while (i < list.length - 1 && list[i + 1].t <= cutoff) i++;
      if (i) list.splice(0, i);
      if (list.length === 1 && list[0].item.stale <= cutoff) this.byUid.delete(uid);
    }
  }

  earliest() {
    let min = Infinity;
    for (const list of this.byUid.values()) if (list.length && list[0].t < min) min = list[0].t;
    return min;
  }

  // Items in force at time T, grouped by category.
  at(T) {
    const out = {};
    for (const list of this.byUid.values()) {
      let lo = 0, hi = list.length - 1, found = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (list[mid].t <= T) { found = mid; lo = mid + 1; } else hi = mid - 1;
      }
      if (found < 0) continue;
      const item = list[found].item;
      if (!(item.stale > T)) continue;
      (out[item.category] ||= []).push(item);
    }
    return out;
  }
}
