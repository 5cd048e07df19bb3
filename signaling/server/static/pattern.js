// What the page measures about received media: the frame index that devices.TestPattern draws into
// its pixels (decoded exactly like devices/pattern.py read_frame_index), frame counts and timing per
// video, and level and dominant frequency per audio track. Exposed to tests through window.callrt.

const COLS = 16;
const ROWS = 2;
const INDEX_BITS = 24;
const CHECK_BITS = 6;
const KEEP_INDICES = 120;

/** The 6-bit check value of an index (pattern.py: ((index * 0x9E3779B1) & 0xFFFFFFFF) >> 26). */
export function checkValue(index) {
  return (Math.imul(index, 0x9e3779b1) >>> 0) >>> (32 - CHECK_BITS);
}

/** Height of the band of index cells at the top of a frame (pattern.py _band_height). */
export function bandHeight(height) {
  return Math.max(2 * ROWS, Math.floor(Math.floor(height / 8) / 2) * 2);
}

/** [y0, y1, x0, x1] of each cell, row-major (pattern.py _cells). */
export function cells(width, height) {
  const band = bandHeight(height);
  const out = [];
  for (let k = 0; k < ROWS * COLS; k++) {
    const r = Math.floor(k / COLS);
    const c = k % COLS;
    out.push([Math.floor((r * band) / ROWS), Math.floor(((r + 1) * band) / ROWS),
              Math.floor((c * width) / COLS), Math.floor(((c + 1) * width) / COLS)]);
  }
  return out;
}

/**
 * The TestPattern index in RGBA pixels (an ImageData of at least the band), or null when the frame
 * carries none: the middle half of each cell is averaged as BT.601 luma (16..235, the range the
 * pattern writes), a cell is 1 above 125, two sync cells (1, 0), 24 index bits, a 6-bit check.
 */
export function readFrameIndex(rgba, stride, width, height) {
  const bits = [];
  for (const [y0, y1, x0, x1] of cells(width, height)) {
    const dy = Math.floor((y1 - y0) / 4);
    const dx = Math.floor((x1 - x0) / 4);
    let sum = 0;
    let n = 0;
    for (let y = y0 + dy; y < y1 - dy; y++) {
      let p = (y * stride + x0 + dx) * 4;
      for (let x = x0 + dx; x < x1 - dx; x++, p += 4) {
        sum += 16 + (65.738 * rgba[p] + 129.057 * rgba[p + 1] + 25.064 * rgba[p + 2]) / 256;
        n++;
      }
    }
    if (n === 0) return null;
    bits.push(sum / n > 125 ? 1 : 0);
  }
  if (bits[0] !== 1 || bits[1] !== 0) return null;
  let index = 0;
  for (const b of bits.slice(2, 2 + INDEX_BITS)) index = index * 2 + b;
  let check = 0;
  for (const b of bits.slice(2 + INDEX_BITS)) check = check * 2 + b;
  return check === checkValue(index) ? index : null;
}

/** Counts the frames a <video> presents and reads the TestPattern index of each. */
export class FrameCounter {
  constructor(video) {
    this.video = video;
    this.canvas = document.createElement("canvas");
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    this.frames = 0;
    this.unreadable = 0;
    this.repeats = 0;
    this.indices = [];
    this.lastIndex = null;
    this.firstFrameAt = null; // ms since the page's navigation started (performance.now())
    this.firstFrameEpochMs = null; // wall clock, comparable with a bot's time.time() on this machine
    this.lastFrameAt = null;
    this.width = 0;
    this.height = 0;
    this.stopped = false;
    this._tick = this._tick.bind(this);
    if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
      video.requestVideoFrameCallback(this._tick);
    } else {
      this._lastTime = -1;
      requestAnimationFrame(() => this._poll());
    }
  }

  _poll() {
    if (this.stopped) return;
    if (this.video.currentTime !== this._lastTime && this.video.readyState >= 2) {
      this._lastTime = this.video.currentTime;
      this._onFrame();
    }
    requestAnimationFrame(() => this._poll());
  }

  _tick() {
    if (this.stopped) return;
    this._onFrame();
    this.video.requestVideoFrameCallback(this._tick);
  }

  _onFrame() {
    const w = this.video.videoWidth;
    const h = this.video.videoHeight;
    if (!w || !h) return;
    const now = performance.now();
    if (this.firstFrameAt === null) {
      this.firstFrameAt = now;
      this.firstFrameEpochMs = Date.now();
    }
    this.lastFrameAt = now;
    this.frames++;
    this.width = w;
    this.height = h;
    const band = bandHeight(h);
    if (this.canvas.width !== w || this.canvas.height !== band) {
      this.canvas.width = w;
      this.canvas.height = band;
    }
    this.ctx.drawImage(this.video, 0, 0, w, band, 0, 0, w, band);
    const index = readFrameIndex(this.ctx.getImageData(0, 0, w, band).data, w, w, h);
    if (index === null) {
      this.unreadable++;
      return;
    }
    if (index === this.lastIndex) {
      // under load drawImage may already show the next frame when a callback runs, and the
      // following callback then reads that frame again: the same frame, not a repeated one
      this.repeats++;
      return;
    }
    this.lastIndex = index;
    this.indices.push(index);
    if (this.indices.length > KEEP_INDICES) this.indices.splice(0, this.indices.length - KEEP_INDICES);
  }

  stats() {
    return {
      frames: this.frames, unreadable: this.unreadable, repeats: this.repeats,
      decoded: this.frames - this.unreadable - this.repeats,
      indices: this.indices.slice(), last_index: this.lastIndex, width: this.width, height: this.height,
      first_frame_at_ms: this.firstFrameAt, first_frame_epoch_ms: this.firstFrameEpochMs,
      last_frame_at_ms: this.lastFrameAt,
    };
  }

  stop() {
    this.stopped = true;
  }
}

let audioContext = null;

/** The page's one AudioContext (created or resumed from a user gesture, e.g. the Join click). */
export function sharedAudioContext() {
  if (audioContext === null) audioContext = new AudioContext();
  if (audioContext.state === "suspended") audioContext.resume().catch(() => {});
  return audioContext;
}

/** Level and dominant frequency of an audio track, sampled a few times a second. */
export class AudioMeter {
  constructor(track, intervalMs = 200) {
    const ctx = sharedAudioContext();
    this.source = ctx.createMediaStreamSource(new MediaStream([track]));
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 8192;
    this.analyser.smoothingTimeConstant = 0;
    this.source.connect(this.analyser);
    this.rate = ctx.sampleRate;
    this.time = new Float32Array(this.analyser.fftSize);
    this.freq = new Float32Array(this.analyser.frequencyBinCount);
    this.level = 0;
    this.peakLevel = 0;
    this.dominantHz = 0;
    this.samples = 0;
    this.timer = setInterval(() => this._sample(), intervalMs);
  }

  _sample() {
    this.analyser.getFloatTimeDomainData(this.time);
    let sum = 0;
    for (const v of this.time) sum += v * v;
    this.level = Math.sqrt(sum / this.time.length);
    this.samples++;
    if (this.level > 1e-4) {
      this.analyser.getFloatFrequencyData(this.freq);
      let best = 1;
      for (let i = 2; i < this.freq.length; i++) if (this.freq[i] > this.freq[best]) best = i;
      let k = best;
      if (best + 1 < this.freq.length) { // parabolic interpolation on the dB magnitudes
        const [a, b, c] = [this.freq[best - 1], this.freq[best], this.freq[best + 1]];
        const denom = a - 2 * b + c;
        if (Number.isFinite(denom) && denom !== 0) k += (0.5 * (a - c)) / denom;
      }
      this.dominantHz = (k * this.rate) / this.analyser.fftSize;
      this.peakLevel = Math.max(this.peakLevel, this.level);
    }
  }

  stats() {
    return { level: this.level, peak_level: this.peakLevel, dominant_hz: this.dominantHz, samples: this.samples,
             context: audioContext ? audioContext.state : "none" };
  }

  stop() {
    clearInterval(this.timer);
    this.source.disconnect();
  }
}
