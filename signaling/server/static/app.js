// The call page: lobby (call, login, camera and microphone choices with a preview), then the call
// (participant grid with video, audio playback, mute indicators, live participant list, camera and
// microphone toggles, leave, end call). State for tests and scripts: window.callrt.

import { Api, ApiError, EventSocket, devLogin, tokenUserId } from "./api.js";
import { MediaSession } from "./mesh.js";
import { AudioMeter, FrameCounter, sharedAudioContext } from "./pattern.js";

const $ = (sel) => document.querySelector(sel);
const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";

const page = {
  apiKey: meta("callrt-api-key"),
  devLogin: meta("callrt-dev-login") === "1",
  callType: "default",
  callId: "",
  userId: null,
  api: null,
  events: null,
  media: null,
  state: "idle", // idle | joining | joined | reconnecting | left
  call: null, // the latest call snapshot (CallResponse)
  ownCapabilities: [],
  sessionId: null,
  participants: new Map(), // session_id -> {session_id, user_id, published_tracks, joined_at}
  remotes: new Map(), // session_id -> {tile, video, audio, counter, meter, stream}
  devices: {
    video: { on: true, explicit: false, track: null, error: null },
    audio: { on: true, explicit: false, track: null, error: null },
  },
  previewStream: null,
  messages: [],
  timing: { navigation_start_epoch_ms: performance.timeOrigin, joined_at_ms: null },
  leftReason: null,
};

// ---------------------------------------------------------------- messages and state

function say(text, level = "info") {
  page.messages.push({ level, text, at_ms: Math.round(performance.now()) });
  if (page.messages.length > 50) page.messages.shift();
  const box = $("#messages");
  const line = document.createElement("div");
  line.className = `message ${level}`;
  line.textContent = text;
  box.prepend(line);
  while (box.children.length > 5) box.lastChild.remove();
  if (level === "error") console.warn(text);
}

function setState(state) {
  page.state = state;
  document.body.dataset.callingState = state;
  $("#status").textContent = state;
  $("#lobby").hidden = !(state === "idle" || state === "left");
  $("#in-call").hidden = !(state === "joining" || state === "joined" || state === "reconnecting");
  $("#join").disabled = state === "joining";
}

// ---------------------------------------------------------------- devices

function constraints(kind) {
  if (kind === "audio") return { audio: true };
  const v = page.call && page.call.settings ? page.call.settings.video : null;
  const res = v ? v.target_resolution : { width: 640, height: 480 };
  return { video: { width: { ideal: res.width }, height: { ideal: res.height },
                    frameRate: { ideal: v ? v.fps : 30 } } };
}

/** Open the camera or microphone; null (and the error kept) when that fails. */
async function openDevice(kind) {
  const device = page.devices[kind];
  try {
    const stream = await navigator.mediaDevices.getUserMedia(constraints(kind));
    device.error = null;
    return stream.getTracks()[0];
  } catch (err) {
    device.error = `${err.name}: ${err.message}`;
    say(`${kind === "video" ? "camera" : "microphone"} could not start: ${device.error}`, "error");
    return null;
  }
}

function releaseDevice(kind) {
  const device = page.devices[kind];
  if (device.track) device.track.stop(); // releases the OS device
  device.track = null;
}

function canSend(kind) {
  const settings = page.call ? page.call.settings : null;
  if (kind === "video") return page.ownCapabilities.includes("send-video") && !!settings && settings.video.enabled;
  return page.ownCapabilities.includes("send-audio");
}

function renderToggles() {
  for (const [kind, label] of [["video", "Camera"], ["audio", "Microphone"]]) {
    const device = page.devices[kind];
    const inCall = page.state === "joined" || page.state === "reconnecting" || page.state === "joining";
    const on = inCall ? !!device.track : device.on;
    for (const button of [$(`#lobby-${kind}`), $(`#call-${kind}`)]) {
      button.setAttribute("aria-pressed", String(on));
      button.textContent = `${label} ${on ? "on" : "off"}`;
      button.classList.toggle("off", !on);
    }
    $(`#call-${kind}`).disabled = inCall && !canSend(kind);
    $(`#lobby-${kind}`).title = device.explicit ? "your choice" : "the call's default applies unless you choose";
  }
  renderLocalTile();
}

async function startPreview() {
  if (page.previewStream || !page.devices.video.on) return;
  const track = await openDevice("video");
  if (!track) return;
  if (!page.devices.video.on || page.state !== "idle") { // changed while opening
    track.stop();
    return;
  }
  page.previewStream = new MediaStream([track]);
  $("#preview").srcObject = page.previewStream;
}

function stopPreview() {
  if (page.previewStream) page.previewStream.getTracks().forEach((t) => t.stop());
  page.previewStream = null;
  $("#preview").srcObject = null;
}

async function lobbyToggle(kind) {
  const device = page.devices[kind];
  device.on = !device.on;
  device.explicit = true;
  if (kind === "video") {
    if (device.on) await startPreview();
    else stopPreview();
  }
  renderToggles();
}

/** Camera or microphone on/off during the call: release the device, same transceivers, no renegotiation. */
async function callToggle(kind) {
  const device = page.devices[kind];
  if (device.track) {
    releaseDevice(kind);
    device.on = false;
    if (page.media) await page.media.setTrack(kind, null);
  } else {
    if (!canSend(kind)) return;
    const track = await openDevice(kind);
    if (!track) return;
    device.track = track;
    device.on = true;
    if (page.media) await page.media.setTrack(kind, track);
  }
  device.explicit = true;
  renderToggles();
}

// ---------------------------------------------------------------- call snapshot and participants

function applySnapshot(call, ownCapabilities) {
  if (!call || (page.call && call.cid === page.call.cid && call.version < page.call.version)) return;
  page.call = call;
  if (ownCapabilities) page.ownCapabilities = ownCapabilities;
  page.participants = new Map((call.session ? call.session.participants : []).map((p) => [p.session_id, p]));
  $("#end").hidden = !page.ownCapabilities.includes("end-call");
  $("#call-title").textContent = call.cid;
  if (page.media) {
    page.media.setCanSend({ audio: canSend("audio"), video: canSend("video") });
  }
  renderParticipants();
  renderToggles();
}

function tracksOf(sessionId) {
  const peer = page.media ? page.media.peers.get(sessionId) : null;
  if (peer) return peer.tracks || []; // the media relay's peer_updated is the fastest word on mute state
  const p = page.participants.get(sessionId);
  return p ? p.published_tracks || [] : [];
}

function renderParticipants() {
  const list = $("#participants");
  list.replaceChildren();
  const everyone = new Map(page.participants);
  if (page.media) { // a peer the media relay announced before the coordinator's event arrived
    for (const [sid, info] of page.media.peers) {
      if (!everyone.has(sid)) everyone.set(sid, { session_id: sid, user_id: info.user_id, published_tracks: info.tracks });
    }
  }
  for (const p of everyone.values()) {
    const mine = p.session_id === page.sessionId;
    const tracks = mine ? publishedNow() : tracksOf(p.session_id);
    const li = document.createElement("li");
    li.dataset.sessionId = p.session_id;
    li.dataset.userId = p.user_id;
    li.dataset.tracks = tracks.join(" ");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = mine ? `${p.user_id} (you)` : p.user_id;
    li.append(name, badge("video", tracks), badge("audio", tracks));
    list.append(li);
  }
  $("#count").textContent = String(everyone.size);
  // tiles: one per remote session (video may come later), none for sessions that are gone
  for (const sid of everyone.keys()) if (sid !== page.sessionId) ensureRemote(sid, everyone.get(sid).user_id);
  for (const sid of [...page.remotes.keys()]) if (!everyone.has(sid)) removeRemote(sid);
  for (const [sid, r] of page.remotes) renderRemoteTile(sid, r);
}

function badge(kind, tracks) {
  const on = tracks.includes(kind);
  const b = document.createElement("span");
  b.className = `badge ${kind} ${on ? "on" : "muted"}`;
  b.dataset.kind = kind;
  b.textContent = `${kind === "video" ? "cam" : "mic"} ${on ? "on" : "off"}`;
  b.title = `${kind === "video" ? "camera" : "microphone"} ${on ? "on" : "muted"}`;
  return b;
}

function publishedNow() {
  return ["audio", "video"].filter((k) => !!page.devices[k].track);
}

// ---------------------------------------------------------------- tiles

function makeTile(label) {
  const tile = document.createElement("div");
  tile.className = "tile";
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // audio plays from its own element
  const name = document.createElement("div");
  name.className = "label";
  const text = document.createElement("span");
  text.className = "name";
  text.textContent = label;
  const badges = document.createElement("span");
  badges.className = "badges";
  name.append(text, badges);
  const off = document.createElement("div");
  off.className = "camera-off";
  off.textContent = label.slice(0, 2).toUpperCase();
  const info = document.createElement("div");
  info.className = "info";
  tile.append(video, off, info, name);
  return { tile, video, badges, info };
}

function renderLocalTile() {
  let local = $("#local-tile");
  if (!page.sessionId) return;
  if (!local) {
    const made = makeTile(`${page.userId} (you)`);
    made.tile.id = "local-tile";
    made.tile.classList.add("local");
    $("#grid").prepend(made.tile);
    local = made.tile;
  }
  const video = local.querySelector("video");
  const track = page.devices.video.track;
  if (track && (!video.srcObject || video.srcObject.getVideoTracks()[0] !== track)) {
    video.srcObject = new MediaStream([track]);
  } else if (!track && video.srcObject) {
    video.srcObject = null;
  }
  const tracks = publishedNow();
  local.dataset.tracks = tracks.join(" ");
  local.classList.toggle("video-muted", !tracks.includes("video"));
  local.querySelector(".badges").replaceChildren(badge("video", tracks), badge("audio", tracks));
}

function ensureRemote(sessionId, userId) {
  let r = page.remotes.get(sessionId);
  if (r) return r;
  const made = makeTile(userId);
  made.tile.dataset.sessionId = sessionId;
  made.tile.dataset.userId = userId;
  const audio = document.createElement("audio");
  audio.autoplay = true;
  made.tile.append(audio);
  $("#grid").append(made.tile);
  r = { sessionId, userId, tile: made.tile, video: made.video, audio, badges: made.badges, info: made.info,
        counter: null, meter: null, videoTrack: null, audioTrack: null, lastFrames: 0, lastAt: performance.now() };
  page.remotes.set(sessionId, r);
  return r;
}

function renderRemoteTile(sessionId, r) {
  const tracks = tracksOf(sessionId);
  r.tile.dataset.tracks = tracks.join(" ");
  r.tile.classList.toggle("video-muted", !tracks.includes("video"));
  r.tile.classList.toggle("audio-muted", !tracks.includes("audio"));
  r.badges.replaceChildren(badge("video", tracks), badge("audio", tracks));
}

function removeRemote(sessionId) {
  const r = page.remotes.get(sessionId);
  if (!r) return;
  if (r.counter) r.counter.stop();
  if (r.meter) r.meter.stop();
  r.video.srcObject = null;
  r.audio.srcObject = null;
  r.tile.remove();
  page.remotes.delete(sessionId);
}

function onRemoteTrack(sessionId, kind, track) {
  const info = page.media.peers.get(sessionId);
  const r = ensureRemote(sessionId, info ? info.user_id : sessionId);
  if (kind === "video") {
    if (r.videoTrack === track) return;
    r.videoTrack = track;
    r.video.srcObject = new MediaStream([track]);
    if (r.counter) r.counter.stop();
    r.counter = new FrameCounter(r.video);
  } else {
    if (r.audioTrack === track) return;
    r.audioTrack = track;
    r.audio.srcObject = new MediaStream([track]);
    r.audio.play().catch((err) => say(`audio playback blocked: ${err.message} (click the page)`, "error"));
    if (r.meter) r.meter.stop();
    try {
      r.meter = new AudioMeter(track);
    } catch (err) {
      say(`no audio meter: ${err.message}`);
    }
  }
  renderRemoteTile(sessionId, r);
}

/** Each remote tile's overlay: size, frame rate and, for a bot's test pattern, the frame index read. */
function renderTileInfo() {
  const now = performance.now();
  for (const r of page.remotes.values()) {
    const v = r.counter ? r.counter.stats() : null;
    if (!v || !v.frames || r.tile.classList.contains("video-muted")) {
      r.info.textContent = "";
      continue;
    }
    const fps = ((v.frames - r.lastFrames) * 1000) / Math.max(1, now - r.lastAt);
    r.lastFrames = v.frames;
    r.lastAt = now;
    const index = v.last_index !== null && v.indices.length ? ` · frame #${v.last_index}` : "";
    r.info.textContent = `${v.width}x${v.height} · ${fps.toFixed(0)} fps${index}`;
  }
}

// ---------------------------------------------------------------- joining and leaving

function readForm() {
  page.callType = $("#call-type").value.trim();
  page.callId = $("#call-id").value.trim();
  return { userId: $("#user-id").value.trim(), token: $("#token").value.trim(), apiKey: $("#api-key").value.trim() };
}

async function join() {
  if (page.state === "joining" || page.state === "joined") return;
  const form = readForm();
  if (!/^[a-z0-9_-]{1,64}$/.test(page.callType) || !/^[A-Za-z0-9_-]{1,64}$/.test(page.callId)) {
    say("call type and id: letters, digits, '-' and '_' (type in lower case)", "error");
    return;
  }
  sharedAudioContext(); // from the click: remote audio may play and be measured
  setState("joining");
  page.leftReason = null;
  const t0 = performance.now();
  try {
    let token = form.token;
    let apiKey = form.apiKey || page.apiKey;
    if (!token) {
      if (!page.devLogin) throw new ApiError({ code: "unauthenticated", message: "paste a user token to join" }, 401);
      if (!form.userId) throw new ApiError({ code: "invalid_request", message: "enter a user id for the dev login" }, 400);
      const login = await devLogin(form.userId);
      token = login.token;
      apiKey = login.api_key;
    }
    page.userId = tokenUserId(token) || form.userId || "me";
    page.api = new Api(apiKey, token);
    page.events = new EventSocket(apiKey, token, {
      onEvent, onReconnect: resync, onFatal: (err) => teardown(`event connection refused: ${err.message}`),
      onDisconnect: () => { if (page.state === "joined") setState("reconnecting"); },
    });
    const connectionId = await page.events.connect();
    const path = `/video/call/${page.callType}/${page.callId}`;
    const result = await page.api.request("POST", `${path}/join`, { body: { create: true },
                                                                     params: { connection_id: connectionId } });
    page.sessionId = result.participant.session_id;
    applySnapshot(result.call, result.own_capabilities);
    await startMedia(result);
    page.timing.joined_at_ms = performance.now();
    setState("joined");
    history.replaceState(null, "", `/call/${page.callType}/${page.callId}${location.search}${location.hash}`);
    say(`joined ${result.call.cid} in ${Math.round(performance.now() - t0)} ms`);
  } catch (err) {
    say(`join failed: ${err.message}${err.code ? ` (${err.code})` : ""}`, "error");
    await teardown(null, { notifyServer: !!page.sessionId });
    setState("idle");
  }
  renderToggles();
}

/** The lobby preview's camera track, handed over to the call (no second getUserMedia), or null. */
function takePreviewTrack() {
  const track = page.previewStream ? page.previewStream.getVideoTracks()[0] : null;
  if (!track || track.readyState !== "live") return null;
  page.previewStream = null;
  $("#preview").srcObject = null;
  track.applyConstraints(constraints("video").video).catch(() => {}); // the call's resolution and rate
  return track;
}

async function startMedia(result) {
  const settings = result.call.settings;
  const defaults = { video: settings.video.enabled && settings.video.camera_default_on,
                     audio: settings.audio.mic_default_on };
  for (const kind of ["video", "audio"]) { // an explicit choice wins, else the call's default; only if allowed
    const device = page.devices[kind];
    const want = (device.explicit ? device.on : defaults[kind]) && canSend(kind);
    device.on = want;
    // a missing device never fails the join: the device ends off, with its error shown
    if (want) device.track = (kind === "video" && takePreviewTrack()) || await openDevice(kind);
  }
  stopPreview();
  page.media = new MediaSession({
    credentials: result.credentials,
    canSend: { audio: canSend("audio"), video: canSend("video") },
    codec: settings.video.codec,
    localTrack: (kind) => (canSend(kind) ? page.devices[kind].track : null),
    onRemoteTrack,
    onPeers: renderParticipants,
    onClosed: (reason) => teardown(reason),
    onError: (err) => say(`the coordinator refused a media message: ${err.message}`, "error"),
    log: (m) => console.info(`callrt: ${m}`),
  });
  await page.media.open(publishedNow());
  renderParticipants();
}

/** Release everything; with notifyServer also tell the coordinator (leave). Idempotent. */
async function teardown(reason, { notifyServer = false } = {}) {
  if (page.tearingDown) return;
  page.tearingDown = true;
  try {
    await release(reason, notifyServer);
  } finally {
    page.tearingDown = false;
  }
}

async function release(reason, notifyServer) {
  const media = page.media;
  page.media = null;
  if (media) media.close();
  for (const kind of ["video", "audio"]) releaseDevice(kind);
  for (const sid of [...page.remotes.keys()]) removeRemote(sid);
  const local = $("#local-tile");
  if (local) local.remove();
  const sessionId = page.sessionId;
  page.sessionId = null;
  if (notifyServer && sessionId && page.api) {
    try {
      const resp = await page.api.request("POST", `/video/call/${page.callType}/${page.callId}/leave`,
                                          { body: { session_id: sessionId } });
      applySnapshot(resp.call, resp.own_capabilities);
    } catch (err) {
      say(`leave not acknowledged: ${err.message}`, "error");
    }
  }
  if (page.events) page.events.close();
  page.events = null;
  if (reason) {
    page.leftReason = reason;
    setState("left");
    say(page.leftReason);
  }
  renderToggles();
  if (page.devices.video.on) startPreview();
}

async function leave() {
  await teardown("you left the call", { notifyServer: true });
}

async function endCall() {
  try {
    await page.api.request("POST", `/video/call/${page.callType}/${page.callId}/mark_ended`);
  } catch (err) {
    say(`end call failed: ${err.message}`, "error");
    return;
  }
  await teardown("you ended the call for everyone");
}

// ---------------------------------------------------------------- events

function onEvent(event) {
  if (!event.call_cid || !page.call || event.call_cid !== page.call.cid) return;
  applySnapshot(event.call, event.own_capabilities);
  const joined = page.state === "joined" || page.state === "reconnecting";
  if (!joined) return;
  if (event.type === "call.ended") {
    teardown(`the call was ended${event.user ? ` by ${event.user.id}` : ""}`);
  } else if (event.type === "call.session_participant_left" && event.participant
             && event.participant.session_id === page.sessionId) {
    teardown("the coordinator removed this session from the call");
  }
}

async function resync(connectionId) {
  if (!page.sessionId) return;
  const resp = await page.api.request("GET", `/video/call/${page.callType}/${page.callId}`,
                                      { params: { connection_id: connectionId, session_id: page.sessionId } });
  applySnapshot(resp.call, resp.own_capabilities);
  if (resp.call.ended_at || !page.participants.has(page.sessionId)) await teardown("the call went on without us");
  else if (page.state === "reconnecting") setState("joined");
}

// ---------------------------------------------------------------- test and script surface

async function stats() {
  const remotes = [];
  for (const [sid, r] of page.remotes) {
    remotes.push({
      session_id: sid, user_id: r.userId, published_tracks: tracksOf(sid),
      video: r.counter ? r.counter.stats() : null, audio: r.meter ? r.meter.stats() : null,
      audio_playing: !!r.audio.srcObject && !r.audio.paused,
    });
  }
  return {
    calling_state: page.state, cid: page.call ? page.call.cid : null, session_id: page.sessionId,
    user_id: page.userId, own_capabilities: page.ownCapabilities,
    participants: [...page.participants.values()].map((p) => ({ session_id: p.session_id, user_id: p.user_id,
                                                                 published_tracks: p.published_tracks })),
    published: publishedNow(), camera_error: page.devices.video.error, microphone_error: page.devices.audio.error,
    remotes, media: page.media ? await page.media.stats() : null, timing: page.timing, left_reason: page.leftReason,
    messages: page.messages.slice(),
  };
}

window.callrt = { stats, join, leave, endCall, toggleCamera: () => callToggle("video"),
                  toggleMicrophone: () => callToggle("audio"), get state() { return page.state; } };

// ---------------------------------------------------------------- start

function init() {
  const match = location.pathname.match(/^\/call\/([^/]+)\/([^/]+)\/?$/);
  const params = new URLSearchParams(location.search);
  const hash = new URLSearchParams(location.hash.slice(1));
  $("#call-type").value = match ? decodeURIComponent(match[1]) : params.get("type") || "default";
  $("#call-id").value = match ? decodeURIComponent(match[2])
    : params.get("id") || `call-${Math.random().toString(36).slice(2, 8)}`;
  $("#user-id").value = params.get("user") || "";
  $("#token").value = hash.get("token") || ""; // a fragment never reaches a server log
  $("#api-key").value = page.apiKey;
  $("#dev-login").hidden = !page.devLogin;
  for (const [kind, param] of [["video", "camera"], ["audio", "mic"]]) {
    if (params.has(param)) {
      page.devices[kind].on = !["0", "off", "false"].includes(params.get(param));
      page.devices[kind].explicit = true;
    }
  }
  $("#join-form").addEventListener("submit", (e) => { e.preventDefault(); join(); });
  $("#lobby-video").addEventListener("click", () => lobbyToggle("video"));
  $("#lobby-audio").addEventListener("click", () => lobbyToggle("audio"));
  $("#call-video").addEventListener("click", () => callToggle("video"));
  $("#call-audio").addEventListener("click", () => callToggle("audio"));
  $("#leave").addEventListener("click", leave);
  $("#end").addEventListener("click", endCall);
  window.addEventListener("pagehide", () => { if (page.sessionId) leaveOnUnload(); });
  setState("idle");
  renderToggles();
  startPreview();
  setInterval(renderTileInfo, 250);
}

/** Closing the tab: tell the coordinator now rather than after the participant timeout. */
function leaveOnUnload() {
  if (page.media) page.media.close();
  if (!page.api || !page.sessionId) return;
  fetch(`/video/call/${page.callType}/${page.callId}/leave`, {
    method: "POST", keepalive: true,
    headers: { "X-Api-Key": page.api.apiKey, Authorization: `Bearer ${page.api.token}`,
               "Content-Type": "application/json" },
    body: JSON.stringify({ session_id: page.sessionId }),
  }).catch(() => {});
}

init();
