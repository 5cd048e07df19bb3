#!/usr/bin/env bash
# Real user-space devices for the device tests: a PulseAudio null sink `vsink` (speaker) whose
# monitor is remapped as the default source `vmic` (microphone), and an Xvfb display (screen).
#
#   bash scripts/devices.sh start    install what is missing (as root, apt-get), start them, write .devices/env
#   bash scripts/devices.sh stop     end them by PID, remove the state
#   bash scripts/devices.sh status   say what runs; exit 0 only when everything answers
#
# State lives in .devices/ at the repository root: pulse.pid, keepalive.pid, xvfb.pid,
# xvfb.display, pulse.pa, logs (*.log), the PulseAudio runtime dir pulse/ (its socket), and
# `env` (export lines: PULSE_SERVER, PULSE_RUNTIME_PATH, DISPLAY, ALSA_CONFIG_PATH,
# ALSA_PLUGIN_DIR) which tests load and shells can `source`. `start` is idempotent: running
# daemons are reused. A PID is only ever signalled after checking it is still the program we
# started (a stale PID file after a reboot must not kill something else).
# Override with CALLRT_DISPLAY=:N (display number) and CALLRT_SCREEN=WxHxD (screen geometry).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.devices"
SCREEN_GEOMETRY="${CALLRT_SCREEN:-640x480x24}"
APT_PACKAGES=(libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins alsa-utils xvfb x11-xserver-utils x11-utils)

log() { printf 'devices.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A short, private PulseAudio runtime dir (unix socket paths are limited to 108 bytes).
pulse_runtime_dir() {
    local dir="$STATE/pulse"
    if (( ${#dir} > 80 )); then
        dir="/tmp/callrt-pulse-$(id -u)-$(printf '%s' "$ROOT" | md5sum | cut -c1-8)"
    fi
    printf '%s' "$dir"
}
PULSE_DIR=$(pulse_runtime_dir)
PULSE_SOCKET="$PULSE_DIR/native"

# True when PID is a live, non-zombie process (PID 1 in a container may never reap zombies).
alive() {
    local pid=$1 st
    [[ -n "$pid" && -r "/proc/$pid/stat" ]] || return 1
    st=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ "$st" != Z && "$st" != X ]]
}

read_pid() { if [[ -f "$STATE/$1.pid" ]]; then cat "$STATE/$1.pid"; fi; }

# True when PID is alive and runs the program COMM (e.g. pulseaudio, Xvfb, parec).
alive_as() { alive "$1" && [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == "$2" ]]; }

kill_pid() {  # kill_pid PID NAME COMM: TERM, wait up to 5 s, then KILL; only if PID still runs COMM
    local pid=$1 name=$2 comm=$3
    alive "$pid" || return 0
    if ! alive_as "$pid" "$comm"; then
        log "pid $pid is no longer $name ($comm); leaving it alone"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
    log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 20); do alive "$pid" || return 0; sleep 0.1; done
    log "warning: $name (pid $pid) is still alive"
}

have_lib() { local libs; libs=$(ldconfig -p 2>/dev/null || true); [[ "$libs" == *"$1"* ]]; }

install_missing() {
    local missing=()
    have_lib libportaudio.so.2 || missing+=(libportaudio2)
    command -v pulseaudio >/dev/null || missing+=(pulseaudio)
    command -v pactl >/dev/null && command -v pacat >/dev/null || missing+=(pulseaudio-utils)
    compgen -G '/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so' >/dev/null || missing+=(libasound2-plugins)
    command -v aplay >/dev/null || missing+=(alsa-utils)
    command -v Xvfb >/dev/null || missing+=(xvfb)
    command -v xsetroot >/dev/null && command -v xset >/dev/null || missing+=(x11-xserver-utils)
    command -v xdpyinfo >/dev/null || missing+=(x11-utils)
    (( ${#missing[@]} == 0 )) && return 0
    if (( $(id -u) != 0 )); then
        die "missing packages: ${missing[*]}; install them with: sudo apt-get install -y ${APT_PACKAGES[*]}"
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$STATE/apt.log" 2>&1 || die "apt-get update failed (see $STATE/apt.log)"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1 \
        || die "apt-get install ${missing[*]} failed (see $STATE/apt.log)"
}

pulse_env() {
    export PULSE_RUNTIME_PATH="$PULSE_DIR" PULSE_SERVER="unix:$PULSE_SOCKET"
    export PULSE_STATE_PATH="$PULSE_DIR/state" PULSE_CONFIG_PATH="$PULSE_DIR/config"
}

pulse_answers() { timeout 5 pactl info >/dev/null 2>&1; }

start_pulse() {
    pulse_env
    local pid
    pid=$(read_pid pulse)
    if alive_as "$pid" pulseaudio && pulse_answers; then
        log "PulseAudio already running (pid $pid, $PULSE_SERVER)"
        return 0
    fi
    [[ -n "$pid" ]] && kill_pid "$pid" "stale PulseAudio" pulseaudio
    # A daemon from an earlier run that lost its PID file would keep the socket; end it by PID.
    local p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == pulseaudio ]] || continue
        if { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -qx "PULSE_RUNTIME_PATH=$PULSE_DIR"; then
            kill_pid "$p" "orphaned PulseAudio" pulseaudio
        fi
    done
    rm -rf "$PULSE_DIR"
    mkdir -p "$PULSE_DIR/state" "$PULSE_DIR/config"
    chmod 700 "$PULSE_DIR"
    cat >"$STATE/pulse.pa" <<EOF
load-module module-native-protocol-unix socket=$PULSE_SOCKET auth-anonymous=1
load-module module-null-sink sink_name=vsink rate=48000 sink_properties=device.description=callrt-virtual-speaker
load-module module-remap-source master=vsink.monitor source_name=vmic source_properties=device.description=callrt-virtual-microphone
set-default-sink vsink
set-default-source vmic
EOF
    # Private HOME/config for the daemon (cookie, state), and the 48 kHz default rate.
    printf 'default-sample-rate = 48000\nalternate-sample-rate = 48000\n' >"$PULSE_CONFIG_PATH/daemon.conf"
    log "starting PulseAudio ($PULSE_SERVER)"
    # setsid: own session, so the daemon outlives this script and a terminal's hangup.
    HOME="$PULSE_DIR" XDG_CONFIG_HOME="$PULSE_DIR/config" setsid pulseaudio -n --file="$STATE/pulse.pa" --daemonize=no --exit-idle-time=-1 \
        --disallow-exit=yes --disallow-module-loading=no --system=no --use-pid-file=yes \
        --log-target=stderr --log-level=notice \
        </dev/null >"$STATE/pulse.log" 2>&1 &
    pid=$!
    echo "$pid" >"$STATE/pulse.pid"
    for _ in $(seq 100); do
        alive "$pid" || die "PulseAudio (pid $pid) exited; see $STATE/pulse.log: $(tail -n 3 "$STATE/pulse.log")"
        pulse_answers && break
        sleep 0.1
    done
    pulse_answers || die "PulseAudio (pid $pid) does not answer on $PULSE_SOCKET; see $STATE/pulse.log"
    # The socket answers: make sure it is *our* daemon that answers (not a stale one).
    alive "$pid" || die "PulseAudio (pid $pid) exited after start; see $STATE/pulse.log"
    local listing
    listing=$(pactl list short sinks; pactl list short sources)
    [[ "$listing" == *vsink* ]] || die "null sink vsink missing; see $STATE/pulse.log"
    [[ "$listing" == *vmic* ]] || die "source vmic missing; see $STATE/pulse.log"
    log "PulseAudio running (pid $pid): sink vsink, source vmic, 48 kHz"
}

# The null sink renders in 2 s blocks while no client asks for low latency, so the first
# block a new recording sees can take ~2 s. A tiny low-latency recorder on vmic keeps the
# sink (and its monitor) running in 20 ms blocks, like a real sound card.
start_keepalive() {
    pulse_env
    local pid
    pid=$(read_pid keepalive)
    if alive_as "$pid" parec && [[ "$(read_pid pulse)" == "$(cat "$STATE/keepalive.for" 2>/dev/null)" ]]; then
        log "keep-alive recorder already running (pid $pid)"
        return 0
    fi
    [[ -n "$pid" ]] && kill_pid "$pid" "stale keep-alive recorder" parec
    setsid parec --device=vmic --latency-msec=20 --raw --format=s16le --rate=48000 --channels=1 \
        --client-name=callrt-keepalive \
        </dev/null >/dev/null 2>"$STATE/keepalive.log" &
    pid=$!
    echo "$pid" >"$STATE/keepalive.pid"
    read_pid pulse >"$STATE/keepalive.for"
    sleep 0.2
    alive "$pid" || die "keep-alive recorder (parec) exited; see $STATE/keepalive.log"
}

display_free() {
    local n=$1
    [[ ! -e /tmp/.X11-unix/X$n && ! -e /tmp/.X$n-lock ]]
}

x_answers() { DISPLAY=$1 timeout 5 xdpyinfo >/dev/null 2>&1; }

start_xvfb() {
    local pid display
    pid=$(read_pid xvfb)
    display=$(cat "$STATE/xvfb.display" 2>/dev/null || true)
    if alive_as "$pid" Xvfb && [[ -n "$display" ]] && x_answers "$display"; then
        log "Xvfb already running (pid $pid, DISPLAY=$display)"
        return 0
    fi
    [[ -n "$pid" ]] && kill_pid "$pid" "stale Xvfb" Xvfb
    local n="${CALLRT_DISPLAY:-:99}"
    n=${n#:}
    if ! display_free "$n"; then
        # A lock whose owner is gone is stale: clear it; otherwise take the next free number.
        local owner
        owner=$({ tr -d ' ' <"/tmp/.X$n-lock"; } 2>/dev/null || true)
        if [[ -n "$owner" ]] && ! alive "$owner"; then
            rm -f "/tmp/.X$n-lock" "/tmp/.X11-unix/X$n"
        fi
        while ! display_free "$n"; do n=$((n + 1)); done
    fi
    display=":$n"
    log "starting Xvfb $display ($SCREEN_GEOMETRY)"
    setsid Xvfb "$display" -screen 0 "$SCREEN_GEOMETRY" -nolisten tcp -noreset \
        </dev/null >"$STATE/xvfb.log" 2>&1 &
    pid=$!
    echo "$pid" >"$STATE/xvfb.pid"
    echo "$display" >"$STATE/xvfb.display"
    for _ in $(seq 100); do
        alive "$pid" || die "Xvfb (pid $pid) exited; see $STATE/xvfb.log: $(tail -n 3 "$STATE/xvfb.log")"
        x_answers "$display" && break
        sleep 0.1
    done
    x_answers "$display" || die "Xvfb (pid $pid) does not answer on $display; see $STATE/xvfb.log"
    log "Xvfb running (pid $pid, DISPLAY=$display)"
}

alsa_plugin_dir() {
    local d
    for d in /usr/lib/*/alsa-lib /usr/lib/alsa-lib; do
        [[ -d "$d" ]] && { printf '%s' "$d"; return; }
    done
}

write_env() {
    local tmp="$STATE/env.tmp"
    {
        echo "# written by scripts/devices.sh start; source it or let tests/devices/conftest.py load it"
        echo "export PULSE_RUNTIME_PATH='$PULSE_DIR'"
        echo "export PULSE_SERVER='unix:$PULSE_SOCKET'"
        echo "export DISPLAY='$(cat "$STATE/xvfb.display")'"
        # PyAV wheels bundle their own libasound, which needs pointing at the system's config.
        echo "export ALSA_CONFIG_PATH='/usr/share/alsa/alsa.conf'"
        local plugins
        plugins=$(alsa_plugin_dir)
        if [[ -n "$plugins" ]]; then echo "export ALSA_PLUGIN_DIR='$plugins'"; fi
    } >"$tmp"
    mv "$tmp" "$STATE/env"
    log "wrote $STATE/env"
}

cmd_start() {
    mkdir -p "$STATE"
    install_missing
    start_pulse
    start_keepalive
    start_xvfb
    write_env
}

cmd_stop() {
    [[ -d "$STATE" ]] || { log "nothing to stop"; return 0; }
    local pid
    kill_pid "$(read_pid keepalive)" "keep-alive recorder" parec
    kill_pid "$(read_pid pulse)" PulseAudio pulseaudio
    kill_pid "$(read_pid xvfb)" Xvfb Xvfb
    local display
    display=$(cat "$STATE/xvfb.display" 2>/dev/null || true)
    if [[ -n "$display" ]]; then
        local n=${display#:} owner
        owner=$({ tr -d ' ' <"/tmp/.X$n-lock"; } 2>/dev/null || true)
        if [[ -z "$owner" ]] || ! alive "$owner"; then rm -f "/tmp/.X$n-lock" "/tmp/.X11-unix/X$n"; fi
    fi
    rm -rf "$PULSE_DIR"
    rm -f "$STATE"/keepalive.pid "$STATE"/keepalive.for "$STATE"/pulse.pid "$STATE"/xvfb.pid "$STATE"/xvfb.display "$STATE"/env "$STATE"/pulse.pa
    log "stopped"
}

cmd_status() {
    local ok=0 pid display
    pulse_env
    pid=$(read_pid pulse)
    if alive_as "$pid" pulseaudio && pulse_answers; then
        echo "pulseaudio: running (pid $pid, $PULSE_SERVER)"
    else
        echo "pulseaudio: not running"; ok=1
    fi
    pid=$(read_pid keepalive)
    if alive_as "$pid" parec; then
        echo "keep-alive recorder: running (pid $pid)"
    else
        echo "keep-alive recorder: not running"; ok=1
    fi
    pid=$(read_pid xvfb)
    display=$(cat "$STATE/xvfb.display" 2>/dev/null || true)
    if alive_as "$pid" Xvfb && [[ -n "$display" ]] && x_answers "$display"; then
        echo "xvfb: running (pid $pid, DISPLAY=$display)"
    else
        echo "xvfb: not running"; ok=1
    fi
    if [[ -f "$STATE/env" ]]; then echo "env: $STATE/env"; else echo "env: missing"; ok=1; fi
    return $ok
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
