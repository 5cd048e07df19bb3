#!/usr/bin/env bash
# Runs the whole test suite the way CI does: start the virtual devices (PulseAudio null sink,
# Xvfb) with scripts/devices.sh, run pytest with their environment, always tear them down.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
mkdir -p artifacts

# system packages some tests use: nftables + iproute2 (network namespaces with packet loss)
need=()
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  echo "installing ${need[*]}" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
    || echo "could not install ${need[*]}: the network-impairment test will say why" >&2
fi

bash scripts/browser.sh || echo "scripts/browser.sh failed: browser tests will report why" >&2
bash scripts/devices.sh start || echo "scripts/devices.sh start failed: device tests will report why" >&2
trap 'bash scripts/devices.sh stop >/dev/null 2>&1 || true' EXIT
if [ -f .devices/env ]; then
  set -a
  # shellcheck disable=SC1091
  . .devices/env
  set +a
fi

"$VENV/bin/ruff" check . || exit 1
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --junitxml=artifacts/junit.xml "$@"
