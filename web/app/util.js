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

// A list redrawn whenever its data changes, whose rows keep their nodes between redraws. A
// row replaced between a mouse press and its release takes no click (the click goes to
// what both have in common: the list), so a row rebuilt on each change loses the clicks
// that straddle one — a hotline acknowledgement was lost so, and a conflict row clicked
// during a raid, when the conflicts change every few seconds, would be too. Each row is
// made once per key (its click listener with it, reading the row's current item when
// clicked), its lines are rewritten only where their text changed, and the list's children
// are moved only when the order or the membership changed.
export class KeyedList {
  // make(row): called once for a new row ({ key, li, body, item }), to add what the row
  // keeps (buttons, another body); click(item, row): the row's action, if it has one.
  constructor(list, { make = null, click = null } = {}) {
    this.list = list;
    this.make = make;
    this.click = click;
    this.rows = new Map(); // key -> row, as last rendered
  }

  // draw(row, item) writes the row: its class, and its lines with `setLines(row.body, …)`.
  render(items, keyOf, draw) {
    const rows = new Map();
    for (const item of items) {
      const key = String(keyOf(item));
      if (rows.has(key)) continue; // one row per key: the first wins
      const row = this.rows.get(key) || this.newRow(key);
      row.item = item;
      draw(row, item);
      rows.set(key, row);
    }
    this.rows = rows;
    const nodes = [...rows.values()].map((row) => row.li);
    const children = this.list.children;
    if (nodes.length === children.length && nodes.every((li, i) => children[i] === li)) return;
    const keep = new Set(nodes);
    for (const child of [...children]) if (!keep.has(child)) child.remove();
    // Only the rows out of place move: a row is not taken out and put back for a new row
    // that comes before it.
    nodes.forEach((li, i) => {
      if (children[i] !== li) this.list.insertBefore(li, children[i] || null);
    });
  }

  newRow(key) {
    const li = el("li");
    li.dataset.key = key;
    const row = { key, li, body: li, item: null };
    if (this.make) this.make(row);
    if (this.click) li.addEventListener("click", () => this.click(row.item, row));
    return row;
  }
}

// A node's lines, [tag, className, text] each, written into the nodes it has: a line whose
// tag, class and text are the same is left alone, so a press on it is never on a node gone.
export function setLines(parent, lines) {
  lines.forEach(([tag, className, text], i) => {
    let node = parent.children[i];
    if (!node || node.tagName !== tag.toUpperCase()) {
      const fresh = el(tag);
      if (node) node.replaceWith(fresh);
      else parent.append(fresh);
      node = fresh;
    }
    if (node.className !== className) node.className = className;
    if (node.textContent !== String(text)) node.textContent = String(text);
  });
  while (parent.children.length > lines.length) parent.lastElementChild.remove();
}
