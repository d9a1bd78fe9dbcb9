// The hub's API as the signed-in party: bearer token on every request, errors carry the
// hub's reason (`{"error": …}`) so the page can say what went wrong.

export class ApiError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async request(path, { method = "GET", body } = {}) {
    const headers = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) {
      let reason = `HTTP ${response.status}`;
      try { reason = (await response.json()).error || reason; } catch { /* not JSON */ }
      throw new ApiError(response.status, reason);
    }
    return response.json();
  }

  get(path) { return this.request(path); }
  post(path, body = {}) { return this.request(path, { method: "POST", body }); }

  // Live items: the socket sends JSON arrays. Reconnects with backoff; the hub replays the
  // current picture on every (re)connect, which History de-duplicates.
  live(onItems, onState) {
    const decoder = new TextDecoder();
    let delay = 500, closed = false, socket = null;
    const open = () => {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${scheme}://${location.host}/api/ws?token=${encodeURIComponent(this.token)}`);
      socket.binaryType = "arraybuffer"; // the hub sends binary frames of UTF-8 JSON
      socket.onopen = () => { delay = 500; onState("live"); };
      socket.onmessage = (event) => {
        let items;
        try {
          const text = typeof event.data === "string" ? event.data : decoder.decode(event.data);
          items = JSON.parse(text);
        } catch { return; }
        if (Array.isArray(items)) onItems(items);
      };
      socket.onclose = () => {
        if (closed) return;
        onState("down");
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 15000);
      };
    };
    open();
    return () => { closed = true; socket?.close(); };
  }
}
