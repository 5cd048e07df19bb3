// The media side of a joined call: the media WebSocket from the join credentials and one
// RTCPeerConnection per remote participant, following signaling/media_protocol.py exactly as the
// Python runtime does (signaling/rtc/session.py, signaling/rtc/peer.py):
//  - the session with the lexicographically smaller session_id offers;
//  - the offerer adds two transceivers, audio then video (sendrecv when it may send that kind,
//    else recvonly); the answerer attaches its tracks to the transceivers of the offer;
//  - aiortc does not trickle ICE: a description is sent once gathering is complete, with every
//    candidate in its SDP, and never a candidate on its own;
//  - a pair has a peer connection only while media flows (a side publishes and the other subscribes);
//  - mute is "publish" with the kinds sent now, on the same transceivers, without renegotiation;
//  - a direction change (capability granted or revoked) is renegotiated by the offerer, at the
//    answerer's request ({renegotiate: true}) when the answerer's direction moved.

export const KINDS = ["audio", "video"];
const PING_INTERVAL_MS = 5000;
const JOIN_TIMEOUT_MS = 10000;
const GATHER_TIMEOUT_MS = 5000;
const MIME = { vp8: "video/vp8", h264: "video/h264", opus: "audio/opus" };

/** Resolves once ICE gathering is complete (or after a timeout: then with what was gathered). */
function iceGathered(pc, timeoutMs = GATHER_TIMEOUT_MS) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

function h264Rank(codec) {
  const fmtp = codec.sdpFmtpLine || "";
  let rank = fmtp.includes("packetization-mode=1") ? 0 : 10; // aiortc speaks packetization-mode 1
  if (/profile-level-id=42e01f/i.test(fmtp)) rank += 0; // constrained baseline first, then baseline
  else if (/profile-level-id=42001f/i.test(fmtp)) rank += 1;
  else rank += 5;
  return rank;
}

/** The receiver's codecs for `kind` with `preferred` (vp8, h264, opus) first, the rest kept. */
export function codecPreferences(kind, preferred) {
  const caps = RTCRtpReceiver.getCapabilities ? RTCRtpReceiver.getCapabilities(kind) : null;
  const mime = MIME[preferred];
  if (!caps || !mime) return null;
  const first = caps.codecs.filter((c) => c.mimeType.toLowerCase() === mime);
  if (!first.length) return null;
  if (preferred === "h264") first.sort((a, b) => h264Rank(a) - h264Rank(b));
  return [...first, ...caps.codecs.filter((c) => !first.includes(c))];
}

/** Kind of a transceiver ("audio" or "video"). */
function kindOf(transceiver) {
  return transceiver.receiver.track.kind;
}

/** One RTCPeerConnection between this page and one remote participant session. */
class PeerLink {
  constructor(session, info) {
    this.session = session;
    this.remote = info;
    this.offerer = session.sessionId < info.session_id;
    const iceServers = (session.credentials.ice_servers || []).map((s) => {
      const server = { urls: s.urls };
      if (s.username) server.username = s.username;
      if (s.credential) server.credential = s.credential;
      return server;
    });
    this.pc = new RTCPeerConnection({ iceServers });
    this.closed = false;
    this.negotiations = 0;
    this.gatherMs = []; // per description sent: the wait for complete ICE gathering
    this.connectedAt = null;
    this._queue = Promise.resolve();
    this.pc.ontrack = (e) => session._onRemoteTrack(info.session_id, e.track);
    this.pc.onconnectionstatechange = () => {
      const state = this.pc.connectionState;
      if (state === "connected" && this.connectedAt === null) this.connectedAt = performance.now();
      if (state === "failed" && !this.closed) session._onLinkFailed(this);
      session._changed();
    };
  }

  /** Run negotiation steps one at a time (the Python side's per-link lock). */
  _serial(step) {
    const run = this._queue.then(step);
    this._queue = run.catch((err) => this.session._log(`negotiation with ${this.remote.session_id} failed: ${err}`));
    return this._queue;
  }

  /** Attach our tracks and set each transceiver's direction; true when a direction changed. */
  async _syncTransceivers() {
    let changed = false;
    for (const t of this.pc.getTransceivers()) {
      if (t.stopped || t.currentDirection === "stopped") continue;
      const kind = kindOf(t);
      const track = this.session.localTrack(kind);
      if (t.sender.track !== track) await t.sender.replaceTrack(track);
      const direction = this.session.directionFor(kind);
      if (t.direction !== direction) {
        t.direction = direction;
        changed = true;
      }
      const prefs = codecPreferences(kind, kind === "video" ? this.session.codec : "opus");
      if (prefs && t.setCodecPreferences) {
        try {
          t.setCodecPreferences(prefs);
        } catch (err) {
          this.session._log(`codec preferences refused: ${err}`);
        }
      }
    }
    return changed;
  }

  async _sendLocalDescription() {
    const t0 = performance.now();
    await iceGathered(this.pc);
    this.gatherMs.push(Math.round(performance.now() - t0));
    const { type, sdp } = this.pc.localDescription;
    this.negotiations++;
    this.session._send({ type: "signal", to: this.remote.session_id, description: { type, sdp } });
  }

  /** (Re)negotiate as the offerer. */
  offer() {
    return this._serial(async () => {
      if (this.closed) return;
      if (this.pc.getTransceivers().length === 0) {
        for (const kind of KINDS) this.pc.addTransceiver(kind, { direction: this.session.directionFor(kind) });
      }
      await this._syncTransceivers();
      await this.pc.setLocalDescription(await this.pc.createOffer());
      await this._sendLocalDescription();
    });
  }

  /** Apply the remote offer (and answer it) or the remote answer. */
  onDescription(description) {
    return this._serial(async () => {
      if (this.closed) return;
      if (description.type === "answer" && this.pc.signalingState !== "have-local-offer") {
        this.session._log(`ignoring an answer from ${this.remote.session_id} in state ${this.pc.signalingState}`);
        return;
      }
      await this.pc.setRemoteDescription(description);
      if (description.type === "offer") {
        await this._syncTransceivers();
        await this.pc.setLocalDescription(await this.pc.createAnswer());
        await this._sendLocalDescription();
      }
    });
  }

  /** After our capabilities changed: renegotiate (or ask the offerer to) if a direction moved. */
  async updateDirections() {
    const transceivers = this.pc.getTransceivers();
    if (!transceivers.length) return;
    if (this.offerer) {
      const moved = transceivers.some((t) => t.direction !== this.session.directionFor(kindOf(t)));
      if (moved) await this.offer();
    } else if (transceivers.some((t) => t.direction !== this.session.directionFor(kindOf(t)))) {
      this.session._send({ type: "signal", to: this.remote.session_id, renegotiate: true });
    }
  }

  /** Send `track` (or nothing: null) for `kind` on the existing transceivers: no renegotiation. */
  async setTrack(kind, track) {
    for (const t of this.pc.getTransceivers()) {
      if (kindOf(t) === kind && !t.stopped && this.session.directionFor(kind) !== "recvonly") {
        await t.sender.replaceTrack(track);
      }
    }
  }

  /** Negotiated codecs, bytes and frames per direction and kind (from getStats). */
  async stats() {
    const report = await this.pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    const out = { state: this.pc.connectionState, offerer: this.offerer, negotiations: this.negotiations,
                  gather_ms: this.gatherMs.slice(), connected_at_ms: this.connectedAt };
    report.forEach((s) => {
      if ((s.type === "outbound-rtp" || s.type === "inbound-rtp") && s.kind) {
        const dir = s.type === "outbound-rtp" ? "send" : "recv";
        const codec = s.codecId ? byId.get(s.codecId) : null;
        out[`${dir}_${s.kind}`] = {
          codec: codec ? codec.mimeType : null, sdp_fmtp: codec ? codec.sdpFmtpLine || "" : "",
          bytes: dir === "send" ? s.bytesSent : s.bytesReceived, packets: dir === "send" ? s.packetsSent : s.packetsReceived,
          frames: s.kind === "video" ? (dir === "send" ? s.framesEncoded : s.framesDecoded) : undefined,
        };
      }
    });
    return out;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.pc.close();
  }
}

/**
 * A joined call's media. `localTrack(kind)` gives the track we send now (null when muted);
 * `canSend` holds the kinds we may send (capability and call settings): their transceivers are
 * sendrecv, the others recvonly. Callbacks: onRemoteTrack(sessionId, kind, track),
 * onPeers(), onClosed(reason), onError(error), onChange().
 */
export class MediaSession {
  constructor({ credentials, canSend, codec, localTrack, onRemoteTrack, onPeers, onClosed, onError, onChange, log }) {
    this.credentials = credentials;
    this.canSend = { ...canSend };
    this.codec = codec || "vp8";
    this.localTrack = localTrack;
    this.onRemoteTrack = onRemoteTrack || (() => {});
    this.onPeers = onPeers || (() => {});
    this.onClosed = onClosed || (() => {});
    this.onError = onError || (() => {});
    this.onChange = onChange || (() => {});
    this.log = log || ((m) => console.info(m));
    this.sessionId = null;
    this.peers = new Map(); // session_id -> {session_id, user_id, tracks, subscribe}
    this.links = new Map(); // session_id -> PeerLink
    this.published = [];
    this.ws = null;
    this.closed = false;
    this.ping = null;
    this.errors = [];
  }

  directionFor(kind) {
    return this.canSend[kind] ? "sendrecv" : "recvonly";
  }

  _log(message) {
    this.log(message);
  }

  _changed() {
    this.onChange();
  }

  /** Open the media socket and join with the kinds we publish now; resolves on "joined". */
  open(publishedKinds) {
    this.published = [...publishedKinds].sort();
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.credentials.url);
      this.ws = ws;
      let joined = false;
      const timer = setTimeout(() => fail(new Error("the media socket did not answer")), JOIN_TIMEOUT_MS);
      const fail = (err) => {
        if (joined) return;
        joined = true;
        clearTimeout(timer);
        try { ws.close(); } catch { /* closed */ }
        reject(err);
      };
      ws.onopen = () => this._send({ type: "join", token: this.credentials.token, subscribe: true,
                                     tracks: this.published });
      ws.onerror = () => fail(new Error("the media socket failed"));
      ws.onclose = (e) => {
        if (!joined) fail(new Error(`the media socket closed (${e.code} ${e.reason})`));
        else if (!this.closed) this.onClosed(e.reason || "media connection lost");
      };
      ws.onmessage = (e) => {
        let msg;
        try { msg = JSON.parse(e.data); } catch { return; }
        if (!joined) {
          if (msg.type !== "joined") {
            const err = msg.error || {};
            fail(Object.assign(new Error(err.message || "media join refused"), { code: err.code, status: err.status }));
            return;
          }
          joined = true;
          clearTimeout(timer);
          this.sessionId = msg.session_id;
          for (const info of msg.peers || []) this._addPeer(info);
          this.ping = setInterval(() => this._send({ type: "ping" }), PING_INTERVAL_MS);
          resolve();
          return;
        }
        this._handle(msg);
      };
    });
  }

  _send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  _handle(msg) {
    switch (msg.type) {
      case "peer_joined":
        this._addPeer(msg.peer);
        break;
      case "peer_updated":
        this.peers.set(msg.peer.session_id, msg.peer);
        this.onPeers();
        this._maybeLink(msg.peer);
        break;
      case "peer_left":
        this._removePeer(String(msg.session_id));
        break;
      case "signal":
        this._onSignal(msg);
        break;
      case "error": {
        const err = msg.error || {};
        this.errors.push({ ref: msg.ref, ...err });
        this._log(`the coordinator refused our ${msg.ref}: ${err.message}`);
        this.onError(err);
        break;
      }
      case "call_ended":
      case "kicked":
        this.closed = true;
        this.onClosed(msg.type === "call_ended" ? "the call was ended" : `removed from the call (${msg.reason || ""})`);
        break;
      default:
        break; // pong
    }
  }

  _needsLink(info) {
    const weSend = this.published.length > 0 && info.subscribe;
    const theySend = (info.tracks || []).length > 0; // the page always subscribes
    return weSend || theySend;
  }

  _addPeer(info) {
    this.peers.set(info.session_id, info);
    this.onPeers();
    this._maybeLink(info);
  }

  _maybeLink(info) {
    if (this.closed || this.links.has(info.session_id) || !this._needsLink(info)) return;
    const link = new PeerLink(this, info);
    this.links.set(info.session_id, link);
    if (link.offerer) link.offer();
    // the answerer waits for the offer, which the offerer sends by the same rule
    this._changed();
  }

  _removePeer(sessionId) {
    this.peers.delete(sessionId);
    const link = this.links.get(sessionId);
    this.links.delete(sessionId);
    if (link) link.close();
    this.onPeers();
    this._changed();
  }

  _onSignal(msg) {
    const from = String(msg.from);
    const info = this.peers.get(from);
    if (!info) return;
    let link = this.links.get(from);
    if (msg.renegotiate) {
      if (link && link.offerer) link.offer();
      return;
    }
    const description = msg.description;
    if (!description) return;
    if (link && description.type === "offer" && ["failed", "closed"].includes(link.pc.connectionState)) {
      link.close(); // the offerer started over with a fresh connection
      this.links.delete(from);
      link = undefined;
    }
    if (!link) {
      link = new PeerLink(this, info);
      this.links.set(from, link);
    }
    link.onDescription(description);
    this._changed();
  }

  _onRemoteTrack(sessionId, track) {
    if (!this.peers.has(sessionId)) return;
    this.onRemoteTrack(sessionId, track.kind, track);
  }

  _onLinkFailed(link) {
    if (this.links.get(link.remote.session_id) !== link) return;
    this._log(`peer connection to ${link.remote.session_id} failed; starting over`);
    this.links.delete(link.remote.session_id);
    link.close();
    const info = this.peers.get(link.remote.session_id);
    if (info) this._maybeLink(info); // try once more with a fresh connection
  }

  /** Send `track` for `kind` (null: stop sending it) and announce what we publish now. */
  async setTrack(kind, track) {
    await Promise.all([...this.links.values()].map((l) => l.setTrack(kind, track)));
    const kinds = new Set(this.published);
    if (track) kinds.add(kind);
    else kinds.delete(kind);
    const published = [...kinds].sort();
    if (published.join() !== this.published.join()) {
      this.published = published;
      this._send({ type: "publish", tracks: published });
      for (const info of this.peers.values()) this._maybeLink(info);
    }
  }

  /** Our capabilities changed (an event): new directions are renegotiated, as the Python side does. */
  async setCanSend(canSend) {
    const before = JSON.stringify(this.canSend);
    this.canSend = { ...canSend };
    if (JSON.stringify(this.canSend) === before) return;
    for (const link of this.links.values()) await link.updateDirections();
  }

  async stats() {
    const links = {};
    for (const [sid, link] of this.links) links[sid] = await link.stats();
    return { session_id: this.sessionId, published: this.published, links, errors: this.errors };
  }

  close() {
    this.closed = true;
    clearInterval(this.ping);
    for (const link of this.links.values()) link.close();
    this.links.clear();
    this.peers.clear();
    if (this.ws) {
      try { this.ws.close(); } catch { /* closed */ }
    }
  }
}
