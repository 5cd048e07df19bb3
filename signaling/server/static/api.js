// The coordinator's REST API and event WebSocket, as the Python client speaks them
// (signaling/client.py, signaling/event_socket.py): X-Api-Key + Bearer token on every request,
// one authenticated /video/connect socket with health.check heartbeats, reconnection with backoff.

/** A coordinator error: {code, message, status}. */
export class ApiError extends Error {
  constructor(payload, status) {
    const body = payload && typeof payload === "object" ? payload : {};
    super(body.message || `HTTP ${status}`);
    this.code = body.code || "http_error";
    this.status = body.status || status;
  }
}

function wsUrl(path) {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
}

async function parse(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new ApiError(body, response.status);
  return body;
}

/** The dev login: a user token minted by a coordinator that runs with development keys. */
export async function devLogin(userId) {
  const response = await fetch("/dev/token", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user_id: userId }),
  });
  return parse(response);
}

/** The user id a token names (read, not verified: the coordinator verifies it). */
export function tokenUserId(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)).user_id || null;
  } catch {
    return null;
  }
}

export class Api {
  constructor(apiKey, token) {
    this.apiKey = apiKey;
    this.token = token;
  }

  async request(method, path, { body = undefined, params = undefined } = {}) {
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined) url.searchParams.set(k, v);
    const headers = { "X-Api-Key": this.apiKey, Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    return parse(response);
  }
}

/**
 * The one event socket: auth, heartbeats, dispatch; after a drop it reconnects with exponential
 * backoff and calls onReconnect(connectionId) so the page can re-watch and resync its call.
 */
export class EventSocket {
  constructor(apiKey, token, { onEvent, onReconnect, onDisconnect, onFatal } = {}) {
    this.apiKey = apiKey;
    this.token = token;
    this.onEvent = onEvent || (() => {});
    this.onReconnect = onReconnect || (async () => {});
    this.onDisconnect = onDisconnect || (() => {});
    this.onFatal = onFatal || (() => {});
    this.connectionId = null;
    this.ws = null;
    this.closing = false;
    this.heartbeat = null;
    this.backoffMs = 250;
    this.reconnects = 0;
  }

  /** Open and authenticate; resolves with the connection id. */
  connect(timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl("/video/connect"));
      let settled = false;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        try { ws.close(); } catch { /* already closed */ }
        reject(err);
      };
      const timer = setTimeout(() => fail(new ApiError({ code: "connection_failed",
                                                         message: "event socket: no answer" }, 503)), timeoutMs);
      ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: this.token, api_key: this.apiKey }));
      ws.onerror = () => fail(new ApiError({ code: "connection_failed", message: "event socket failed" }, 503));
      ws.onclose = (e) => fail(new ApiError({ code: "connection_failed",
                                              message: `event socket closed (${e.code})` }, 503));
      ws.onmessage = (e) => {
        let msg;
        try { msg = JSON.parse(e.data); } catch { return; }
        if (!settled) {
          if (msg.type !== "connection.ok") {
            fail(new ApiError(msg.error || { code: "unauthenticated", message: "event socket refused" }, 401));
            return;
          }
          settled = true;
          clearTimeout(timer);
          this._adopt(ws, msg);
          resolve(this.connectionId);
          return;
        }
      };
    });
  }

  _adopt(ws, ok) {
    this.ws = ws;
    this.connectionId = ok.connection_id;
    const intervalMs = Math.max(200, Math.min(10, Number(ok.heartbeat_interval_s) || 10) * 1000);
    const beat = () => { if (ws.readyState === WebSocket.OPEN) ws.send('{"type":"health.check"}'); };
    clearInterval(this.heartbeat);
    beat();
    this.heartbeat = setInterval(beat, intervalMs);
    ws.onmessage = (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      if (msg && typeof msg === "object" && msg.type !== "health.check") this.onEvent(msg);
    };
    ws.onerror = () => {};
    ws.onclose = (e) => this._dropped(ws, e.code);
  }

  async _dropped(ws, code) {
    if (ws !== this.ws) return;
    clearInterval(this.heartbeat);
    this.ws = null;
    if (this.closing) return;
    if (code === 4001) { // token refused or expired
      this.onFatal(new ApiError({ code: "unauthenticated", message: "the coordinator refused the token" }, 401));
      return;
    }
    this.onDisconnect();
    while (!this.closing) {
      await new Promise((r) => setTimeout(r, this.backoffMs * (1 + Math.random() / 4)));
      if (this.closing) return;
      try {
        await this.connect();
      } catch (err) {
        if (err.status === 401) {
          this.onFatal(err);
          return;
        }
        this.backoffMs = Math.min(this.backoffMs * 2, 10000);
        continue;
      }
      this.backoffMs = 250;
      this.reconnects++;
      try {
        await this.onReconnect(this.connectionId);
      } catch (err) {
        console.warn("resync after reconnect failed", err);
      }
      return;
    }
  }

  close() {
    this.closing = true;
    clearInterval(this.heartbeat);
    if (this.ws) this.ws.close();
    this.ws = null;
  }
}
