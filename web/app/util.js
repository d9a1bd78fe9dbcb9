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
