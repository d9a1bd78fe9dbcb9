// Small DOM helpers. Text from items is always set as textContent, never as HTML: callsigns,
// remarks and messages come from other parties and must not be able to inject markup.

export function el(tag, props = {}, text = null) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  if (text !== null && text !== undefined) node.textContent = String(text);
  return node;
}

export function fmtTime(epochS) {
  if (!Number.isFinite(epochS)) return "—";
  return `${new Date(epochS * 1000).toISOString().slice(11, 19)}Z`;
}

export function fmtSpan(seconds) {
  const s = Math.round(Math.abs(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(r).padStart(2, "0")}s` : `${r}s`;
}

// One time format everywhere: HH:MM:SSZ (UTC), also for ISO texts the API returns.
export function fmtIso(text) {
  return fmtTime(Date.parse(text) / 1000);
}

// The hub's clock, which the page shows and judges staleness and deadlines by. It is the
// wall clock for a real hub; a demo runs its hub on a scenario clock, compressed while the
// scenarios play (`rate` > 1) — the page then says it shows scenario time.
export class HubClock {
  constructor(info) {
    this.set(info);
  }

  set(info) {
    this.base = Number(info?.time) || Date.now() / 1000;
    this.rate = Number(info?.rate) || 1;
    this.scenario = Boolean(info?.scenario);
    this.at = performance.now();
  }

  now() {
    return this.base + ((performance.now() - this.at) / 1000) * this.rate;
  }

  label() {
    if (!this.scenario) return "";
    return this.rate !== 1 ? `scenario time ×${+this.rate.toFixed(1)}` : "scenario time";
  }
}
