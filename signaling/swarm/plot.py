"""``--plot PATH.png``: latency p95 and received frames/s over time, one line per worker (matplotlib, Agg).

callrt's workers are solid lines, the plain-aiortc baseline's dashed; time 0 is when the worker's
measuring window opened (samples before it are the joins and the warm-up).
"""

from __future__ import annotations

from typing import Any

from signaling.swarm.errors import SwarmError

_STYLE = {"callrt": "-", "aiortc": "--"}
_LABEL = {"callrt": "callrt", "aiortc": "plain aiortc"}


def plot(report: dict[str, Any], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SwarmError("--plot needs matplotlib (pip install matplotlib)", code="swarm_plot_unavailable") from exc
    fig, (ax_lat, ax_rx, ax_lag) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for engine, run in report["runs"].items():
        for w in run["workers"]:
            tl = w.get("timeline") or []
            t = [s["t"] for s in tl]
            color = colors[w["worker"] % len(colors)]
            label = f"{_LABEL.get(engine, engine)} worker {w['worker']}"
            style = _STYLE.get(engine, ":")
            ax_lat.plot(t, [s["latency_ms_p95"] for s in tl], style, color=color, label=label)
            ax_rx.plot(t, [s["rx_audio"] + s["rx_video"] for s in tl], style, color=color, label=label)
            ax_lag.plot(t, [s["loop_lag_ms_p95"] for s in tl], style, color=color, label=label)
    layout = report["layout"]
    ax_lat.set_title(f"swarm {report['run_id']}: {layout['calls']} calls x {layout['per_call']}")
    ax_lat.set_ylabel("latency p95 (ms)")
    ax_rx.set_ylabel("received frames/s")
    ax_lag.set_ylabel("event loop lag p95 (ms)")
    ax_lag.set_xlabel("seconds since the measuring window opened")
    for ax in (ax_lat, ax_rx, ax_lag):
        ax.grid(True, alpha=0.3)
        ax.axvline(0, color="grey", linewidth=0.8)
    ax_lat.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
