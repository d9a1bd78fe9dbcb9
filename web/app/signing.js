// Signing in the page, for a party whose hub has its Ed25519 public key: the hub then refuses
// what that party sends through the API unless it is signed (hotline messages, acks). The
// duty officer loads the party's private key (PKCS#8 PEM); it stays in this page's memory,
// is never stored or sent, and signs the canonical JSON of what the hub will check.

// The hub's canonical JSON for these payloads: keys sorted, no spaces, strings escaped as
// JSON.stringify escapes them (the same bytes as the hub's encoder for strings).
export function canonical(payload) {
  return JSON.stringify(payload, Object.keys(payload).sort());
}

function pemBody(text) {
  const match = /-----BEGIN PRIVATE KEY-----([\s\S]+?)-----END PRIVATE KEY-----/.exec(text);
  if (!match) throw new Error("not a PKCS#8 PEM private key (BEGIN PRIVATE KEY)");
  const bytes = atob(match[1].replace(/\s+/g, ""));
  return Uint8Array.from(bytes, (c) => c.charCodeAt(0));
}

export class Signer {
  static async fromPem(text) {
    if (!crypto.subtle) {
      throw new Error("the browser signs only on https or localhost pages");
    }
    let key;
    try {
      key = await crypto.subtle.importKey("pkcs8", pemBody(text), { name: "Ed25519" }, false, ["sign"]);
    } catch (e) {
      throw new Error(`not an Ed25519 private key (${e.message})`);
    }
    return new Signer(key);
  }

  constructor(key) { this.key = key; }

  // The `signature` object the API takes beside the payload.
  async sign(payload) {
    const bytes = new TextEncoder().encode(canonical(payload));
    const signature = new Uint8Array(await crypto.subtle.sign("Ed25519", this.key, bytes));
    return { value: btoa(String.fromCharCode(...signature)) };
  }
}
