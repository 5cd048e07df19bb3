"""Two participants in separate network namespaces (veth through this host) with 5 % packet loss
each way: video and audio stay verified (NACK/PLI recovery); loss and recovery figures are printed.

Loss comes from nftables (``numgen random``) inside each namespace. Added delay needs the kernel's
``sch_netem``; where it is missing (as on this machine kind) the test runs loss only and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from signaling.server import EmbeddedCoordinator
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=20)


def _can_use_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if not shutil.which("ip") or not shutil.which("nft"):
        return "needs iproute2 and nftables (apt-get install iproute2 nftables)"
    probe = f"crt-probe-{os.getpid()}"
    if sh("ip", "netns", "add", probe, check=False).returncode != 0:
        return "the kernel has no network namespaces"
    try:
        nft = sh("ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe", check=False)
        if nft.returncode != 0:
            return f"nftables does not work here: {nft.stderr.strip()}"
    finally:
        sh("ip", "netns", "del", probe, check=False)
    return None


@pytest.fixture
def namespaces():
    reason = _can_use_netns()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI on this machine kind runs this test, but: {reason}")
        pytest.skip(reason)
    tag = os.getpid() % 10_000
    hosts = []
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    try:
        for n, name in enumerate(("a", "b"), start=1):
            ns, host_if, ns_if = f"crt-{name}-{tag}", f"crt{name}{tag}h", f"crt{name}{tag}n"
            gw, addr = f"10.231.{n}.1", f"10.231.{n}.2"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            sh("ip", "link", "set", ns_if, "netns", ns)
            sh("ip", "addr", "add", f"{gw}/24", "dev", host_if)
            sh("ip", "link", "set", host_if, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{addr}/24", "dev", ns_if)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", gw)
            # 5 % of the UDP packets (the media) entering this host are lost
            sh("ip", "netns", "exec", ns, "nft", "add", "table", "inet", "impair")
            sh("ip", "netns", "exec", ns, "nft", "add", "chain", "inet", "impair", "in",
               "{ type filter hook input priority 0; }")
            sh("ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "impair", "in", "meta", "l4proto", "udp",
               "numgen", "random", "mod", "100", "<", "5", "drop")
            delay = sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", ns_if, "root", "netem", "delay",
                       "100ms", check=False)
            hosts.append({"ns": ns, "host_if": host_if, "gw": gw, "addr": addr,
                          "delay": delay.returncode == 0, "delay_error": delay.stderr.strip()})
        yield hosts
    finally:
        for h in hosts:
            sh("ip", "netns", "del", h["ns"], check=False)
            sh("ip", "link", "del", h["host_if"], check=False)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)


def test_media_survives_packet_loss_between_namespaces(namespaces, capsys):
    with EmbeddedCoordinator(make_config(), host="0.0.0.0") as coord:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [subprocess.Popen(["ip", "netns", "exec", h["ns"], sys.executable, "-m",
                                   "tests.signaling.netns_participant", f"http://{h['gw']}:{coord.port}",
                                   f"user-{i}", str(440 + 220 * i), "10"],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i, h in enumerate(namespaces)]
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))
    with capsys.disabled():
        delay = "with 100 ms delay" if all(h["delay"] for h in namespaces) else (
            f"without added delay (netem unavailable: {namespaces[0]['delay_error'] or 'unknown'})")
        print(f"\n5 % UDP loss each way {delay}:")
        for r in reports:
            print(f"  {r['user']}: {r['readable']}/{r['frames']} frames readable, {r['fps']:.1f} fps, in order "
                  f"{r['in_order_fraction']:.0%}, max index gap {r['max_index_gap']}, tone {r['tone_hz']:.1f} Hz, "
                  f"inbound {r['inbound']}, keyframe requests from the peer {r['keyframe_requests_from_peers']}")
    for i, r in enumerate(reports):
        assert "error" not in r, r
        other_freq = 440 + 220 * (1 - i)
        assert abs(r["tone_hz"] - other_freq) < 5
        assert r["fps"] > 15 and r["in_order_fraction"] > 0.95
        assert sum(k["packets_lost"] for k in r["inbound"].values()) > 0  # the loss was real...
        assert r["inbound"]["video"]["retransmissions_received"] > 0  # ...NACKed and resent (RTX)...
        assert r["readable"] >= 0.8 * r["frames"]  # ...and recovered from
