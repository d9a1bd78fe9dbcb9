// The side panel: hotline inbox (with acknowledge buttons and deadlines), conflicts, launch
// events and the public CAP feed. Each list is re-read from the API when the WebSocket says
// something of its kind changed, so what it lists is exactly what the hub returns.

import { Signer } from "./signing.js";
import { KeyedList, el, fmtIso, fmtSpan, fmtTime, setLines } from "./util.js";

function randomHex(bytes) {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Panels {
  constructor(api, party, map, clock, country) {
    this.api = api;
    this.party = party;
    this.map = map;
    this.clock = clock; // the hub's time: deadlines count down on it
    this.country = country;
    this.messages = [];
    // Each list keeps its rows' nodes between redraws (util.js KeyedList says why).
    this.hotlineList = new KeyedList(document.getElementById("hotline"), {
      make: (row) => {
        row.body = el("div");
        row.button = null;
        row.li.append(row.body);
      },
    });
    const zoomGeometry = (n) => n.geometry && this.zoomTo(L.geoJSON(n.geometry));
    this.conflictList = new KeyedList(document.getElementById("conflicts"), { click: zoomGeometry });
    this.launchList = new KeyedList(document.getElementById("launches"), {
      click: (e) => {
        const ring = e.impact?.polygon || e.launch?.polygon;
        if (ring) this.zoomTo(L.polygon(ring.map(([x, y]) => [y, x])));
      },
    });
    this.alertList = new KeyedList(document.getElementById("alerts"));
    this.recipientIds = []; // parties a hotline message from this party reaches now
    this.timers = {};
    this.signer = null; // set once a party that signs has loaded its key
    document.getElementById("compose").addEventListener("submit", (e) => this.send(e));
  }

  // A party with a registered key must sign what it sends: offer to load the key.
  enableSigning() {
    document.getElementById("signing").hidden = false;
    const input = document.getElementById("signing-key");
    const state = document.getElementById("signing-state");
    input.addEventListener("change", async () => {
      const file = input.files && input.files[0];
      if (!file) return;
      try {
        this.signer = await Signer.fromPem(await file.text());
        state.textContent = `signing as ${this.party} with ${file.name}`;
        document.getElementById("hotline-error").textContent = "";
      } catch (e) {
        this.signer = null;
        state.textContent = `cannot use ${file.name}: ${e.message}`;
      }
      input.value = "";
    });
  }

  // The body for a signed API call: the payload, plus its signature when this page signs.
  async signed(payload, body = payload) {
    return this.signer ? { ...body, signature: await this.signer.sign(payload) } : body;
  }

  // Debounce: a burst of items of one kind causes one GET.
  soon(kind, fn, ms = 150) {
    clearTimeout(this.timers[kind]);
    this.timers[kind] = setTimeout(fn, ms);
  }

  async refreshAll() {
    await Promise.all([this.hotline(), this.conflicts(), this.launches(), this.alerts()]);
  }

  // The send form offers only the parties a hotline agreement in force lets this party reach
  // (the hub would refuse the others with 403); the roster comes from the authenticated API.
  async recipients() {
    const roster = await this.api.get("/api/parties");
    const reachable = roster.filter((p) => p.hotline && !p.you);
    this.recipientIds = reachable.map((p) => p.id);
    const select = document.getElementById("compose-to");
    select.replaceChildren(...reachable.map((p) => el("option", { value: p.id, title: p.name }, p.id)));
    document.getElementById("compose").hidden = reachable.length === 0;
    const none = document.getElementById("compose-none");
    none.hidden = reachable.length > 0;
    none.textContent = "No hotline agreement in force lets you send to another party now.";
  }

  async send(event) {
    event.preventDefault();
    const to = document.getElementById("compose-to").value;
    const input = document.getElementById("compose-text");
    const error = document.getElementById("hotline-error");
    try {
      const message = { to, text: input.value, uid: `GeoChat.web.${randomHex(8)}` };
      await this.api.post("/api/hotline/send", await this.signed(message));
      input.value = "";
      error.textContent = "";
    } catch (e) {
      error.textContent = `not sent: ${e.message}`;
    }
    this.hotline();
  }

  async hotline() {
    try {
      this.messages = await this.api.get("/api/hotline");
      this.renderHotline();
    } catch (e) {
      document.getElementById("hotline-error").textContent = `hotline: ${e.message}`;
    }
  }

  // Redrawn every second while a message waits (its deadline counts down), so a row's nodes
  // are kept and only its text is written again: a button replaced between a press and its
  // release takes no click, and a duty officer's acknowledgement was lost so (a press of
  // ~0.1 s against a redraw each second: about one in ten). A button kept also stays
  // disabled while its acknowledgement is on its way.
  renderHotline() {
    const now = this.clock.now();
    let waiting = 0;
    this.hotlineList.render([...this.messages].reverse(), (m) => m.id, (row, m) => {
      const mine = m.to.includes(this.party) && m.pending.includes(this.party);
      row.li.className = m.overdue.length > 0 ? "overdue" : m.pending.length ? "pending" : "";
      setLines(row.body, this.hotlineLines(m, now));
      if (mine) {
        waiting++;
        if (!row.button) {
          row.button = el("button", { type: "button", className: "ack" }, "Acknowledge");
          row.button.addEventListener("click", () => this.ack(row.key, row.button));
          row.li.append(row.button);
        }
      } else if (row.button) {
        row.button.remove();
        row.button = null;
      }
    });
    document.getElementById("hotline-count").textContent = waiting ? String(waiting) : "";
  }

  // A message's lines: who to whom, its text, who has not connected, its acknowledgements.
  hotlineLines(m, now) {
    // A room's message asks nobody to acknowledge: show whom it reached.
    const to = m.to.length ? m.to : m.audience || [];
    const lines = [
      ["div", "meta", `${fmtTime(m.sent)} ${m.from} → ${to.join(", ") || "—"}`],
      ["div", "", m.text],
    ];
    for (const c of m.awaiting || []) {
      const late = m.escalated.includes(`callsign:${c}`) ? " (escalated)" : "";
      lines.push(["div", "meta", `${c}: not connected yet${late}`]);
    }
    if (m.closed) lines.push(["div", "meta", `closed ${fmtTime(m.closed)}`]);
    for (const p of m.to) {
      const status = m.acks[p] !== undefined
        ? `${p}: acknowledged ${fmtTime(m.acks[p])}`
        : m.deadlines[p] <= now
          ? `${p}: OVERDUE by ${fmtSpan(now - m.deadlines[p])}${m.escalated.includes(p) ? " (escalated)" : ""}`
          : `${p}: ack due in ${fmtSpan(m.deadlines[p] - now)}`;
      lines.push(["div", "meta", status]);
    }
    return lines;
  }

  async ack(id, button) {
    button.disabled = true;
    const error = document.getElementById("hotline-error");
    try {
      await this.api.post(`/api/hotline/${encodeURIComponent(id)}/ack`, await this.signed({ ack: id }, {}));
      error.textContent = "";
    } catch (e) {
      error.textContent = `acknowledge failed: ${e.message}`;
      button.disabled = false;
    }
    await this.hotline();
  }

  // Conflicts and launch events change often during a raid, each change a redraw: their rows
  // are kept (by the notice's conflict id, the event's id) so that a click on one still zooms.
  async conflicts() {
    const notices = await this.api.get("/api/conflicts");
    this.conflictList.render(notices, (n) => n.conflict_id, (row, n) => {
      row.li.className = n.geometry ? "conflict clickable" : "conflict";
      const cpa = n.tcpa_s != null ? `, CPA in ${Math.round(n.tcpa_s)} s at ${Math.round(n.dcpa_m)} m` : "";
      setLines(row.body, [
        ["strong", "", `${n.kind}`],
        ["div", "", `your ${n.own_uid} vs ${n.other_party}${n.other_uid ? ` (${n.other_uid})` : ""}`],
        ["div", "meta", `${Math.round(n.floor_m)}–${Math.round(n.ceiling_m)} m${cpa}`],
      ]);
    });
    document.getElementById("conflict-count").textContent = notices.length ? String(notices.length) : "";
  }

  async launches() {
    const events = await this.api.get("/api/launch/events");
    this.launchList.render(events, (e) => e.event_id, (row, e) => {
      row.li.className = e.impact?.polygon || e.launch?.polygon ? "clickable" : "";
      const lines = [
        ["strong", "", `event ${e.event_id}`],
        ["div", "meta", `from ${e.parties.join(", ")}; ${e.n_points} points`],
      ];
      const impact = e.impact?.ellipse;
      if (impact) {
        lines.push(["div", "", `impact ${impact.lat.toFixed(2)}, ${impact.lon.toFixed(2)} (±${(impact.semi_major_m / 1000).toFixed(1)} km) at ${fmtIso(e.impact.time)}`]);
      }
      setLines(row.body, lines);
    });
  }

  async alerts() {
    // The CAP feed is public (the same for everyone). The party's own warnings — those it
    // issues for its country's regions — come first, then everyone else's; newest first.
    const response = await fetch("/cap/feed.atom");
    if (!response.ok) return;
    const doc = new DOMParser().parseFromString(await response.text(), "application/xml");
    const mine = `commonsky.${this.party.toLowerCase()}`;
    const entries = [...doc.getElementsByTagNameNS("*", "entry")].map((entry) => {
      const text = (name) => entry.getElementsByTagNameNS("*", name)[0]?.textContent || "";
      return { id: text("id"), title: text("title"), updated: text("updated"), author: text("name") };
    });
    const own = entries.filter((e) => e.author === mine);
    const others = entries.filter((e) => e.author !== mine);
    // An entry's id is its CAP document's address; one without is known by title and time.
    const key = (e) => e.id || `${e.title}|${e.updated}`;
    this.alertList.render([...own, ...others].slice(0, 50), key, (row, e) => {
      row.li.className = e.author === mine ? "overdue own" : "overdue";
      const issuer = e.author.startsWith("commonsky.") ? e.author.slice(10).toUpperCase() : e.author;
      const whose = e.author === mine ? `yours${this.country ? ` (${this.country})` : ""}` : `from ${issuer}`;
      setLines(row.body, [
        ["div", "", e.title],
        ["div", "meta", `${fmtIso(e.updated)} · ${whose}`],
      ]);
    });
  }

  zoomTo(layer) {
    const bounds = layer.getBounds();
    if (bounds.isValid()) this.map.fitBounds(bounds.pad(0.5), { maxZoom: 10 });
  }
}
