"""``callrt``: the command line. Every command prints for people, or one JSON document with ``--json``.

Server-side commands (``token``, ``user``, ``call-type``, ``call``) need the API key and
secret (``--api-key``/``--api-secret`` or ``CALLRT_API_KEY``/``CALLRT_API_SECRET``) and
talk to the coordinator at ``--url`` (``CALLRT_URL``, default http://127.0.0.1:3080).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from media.errors import CallrtError
from signaling import cli_args, event_loop
from signaling.client import DEFAULT_URL, ServerClient
from signaling.errors import InvalidRequest
from signaling.models import CAPABILITIES, ROLES
from signaling.swarm.cli import add_swarm_parser
from signaling.tables import print_error, table

logger = logging.getLogger("callrt")

LOG_LEVELS = ["critical", "error", "warning", "info", "debug", "trace"]
"""uvicorn's log levels (``callrt serve --log-level``)."""


def _out(args: argparse.Namespace, data: Any, human: str | Callable[[], str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(human() if callable(human) else human)


def _dump(model: Any) -> Any:
    if isinstance(model, list):
        return [_dump(m) for m in model]
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else model


def _server_client(args: argparse.Namespace) -> ServerClient:
    if not args.api_key or not args.api_secret:
        raise InvalidRequest("set --api-key/--api-secret or CALLRT_API_KEY/CALLRT_API_SECRET "
                             "(`callrt serve` started without keys prints its development pair)")
    return ServerClient(args.url, api_key=args.api_key, api_secret=args.api_secret)


# ---------------------------------------------------------------- serve and token


def cmd_serve(args: argparse.Namespace) -> int:
    import sqlite3

    import uvicorn

    from signaling.gc_tuning import tune_gc
    from signaling.server.app import create_app
    from signaling.server.config import ServerConfig, stored_dev_keys, uvicorn_options

    key, secret, dev = args.api_key, args.api_secret, False
    try:
        if not key or not secret:  # the database's development pair: the same after a restart on the same --db
            key, secret = stored_dev_keys(args.db)
            dev = True
        config = ServerConfig(api_key=key, api_secret=secret, db_path=args.db, dev_keys=dev,
                              public_url=args.public_url,
                              ice_servers=[_ice_server(spec) for spec in args.ice_server],
                              rate_limit_per_s=args.rate_limit, rate_limit_burst=args.rate_burst)
        app = create_app(config)
    except sqlite3.Error as exc:
        raise InvalidRequest(f"--db {args.db}: cannot use it as the coordinator's SQLite database ({exc})") from exc
    url = args.public_url or f"http://{args.host}:{args.port}"
    info = {"url": url, "db": args.db, "api_key": key, "dev_keys": dev}
    if dev:
        info["api_secret"] = secret
    if args.json:
        print(json.dumps(info), flush=True)
    else:
        print(f"callrt coordinator on {url} (db: {args.db})", flush=True)
        if dev:
            where = "a new one, gone when the server stops" if args.db == ":memory:" else f"kept in {args.db}"
            print(f"No keys given: using the development pair ({where}). Use it with:", flush=True)
            print(f"  export CALLRT_URL={url} CALLRT_API_KEY={key} CALLRT_API_SECRET={secret}", flush=True)
    tune_gc()  # after the app is built, so its objects are frozen out of later collections
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                **uvicorn_options())  # type: ignore[arg-type]
    return 0


def _ice_server(spec: str) -> Any:
    """``URL`` or ``URL,USERNAME,CREDENTIAL`` (TURN) → an ``ICEServer``."""
    from signaling.models import ICEServer

    url, _, rest = spec.partition(",")
    username, _, credential = rest.partition(",")
    if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
        raise InvalidRequest(f"--ice-server {url!r}: expected a stun:/turn: URL")
    return ICEServer(urls=[url], username=username or None, credential=credential or None)


def cmd_token(args: argparse.Namespace) -> int:
    from signaling.tokens import TokenIssuer

    if not args.api_secret:
        raise InvalidRequest("set --api-secret or CALLRT_API_SECRET to sign tokens")
    token = TokenIssuer(args.api_key or "", args.api_secret).create_user_token(args.user_id, args.expires_in)
    _out(args, {"user_id": args.user_id, "token": token}, token)
    return 0


# ---------------------------------------------------------------- users and call types


async def cmd_user(args: argparse.Namespace) -> int:
    async with _server_client(args) as sc:
        if args.action == "upsert":
            users = await sc.upsert_users([{"id": args.user_id, "name": args.name, "role": args.role,
                                            "teams": args.team or []}])
            user = users[0]
        else:
            user = await sc.get_user(args.user_id)
        _out(args, _dump(user), f"{user.id}: role={user.role} teams={','.join(user.teams) or '-'} name={user.name}")
    return 0


def _grantstable(ct: Any) -> str:
    roles = list(ct.grants)
    rows = [[cap, *("x" if cap in ct.grants[r] else "" for r in roles)] for cap in CAPABILITIES]
    return f"call type {ct.name}\n" + table(rows, ["capability", *roles])


def _parse_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """``video.camera_default_on=false`` → ``{"video": {"camera_default_on": False}}`` (values are JSON)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        path, sep, raw = pair.partition("=")
        if not sep or not path:
            raise InvalidRequest(f"expected KEY.PATH=VALUE, got {pair!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = out
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return out


async def cmd_call_type(args: argparse.Namespace) -> int:
    async with _server_client(args) as sc:
        if args.action == "list":
            types = await sc.list_call_types()
            _out(args, _dump(types), lambda: table([[t.name, len(t.grants), t.settings.backstage.enabled]
                                                     for t in types], ["name", "roles", "backstage"]))
            return 0
        if args.action == "create":
            ct = await sc.create_call_type(args.name, copy_from=args.copy_from,
                                           settings=_parse_settings(args.settings or []))
        elif args.action == "grant":
            ct = await sc.grant(args.name, args.role, args.capabilities)
        elif args.action == "revoke":
            ct = await sc.revoke(args.name, args.role, args.capabilities)
        elif args.action == "set":
            ct = await sc.update_call_type(args.name, settings=_parse_settings(args.settings))
        elif args.action == "delete":
            await sc.delete_call_type(args.name)
            _out(args, {"deleted": args.name}, f"deleted call type {args.name}")
            return 0
        else:
            ct = await sc.get_call_type(args.name)
        _out(args, _dump(ct), lambda: _grantstable(ct) + "\nsettings: " + ct.settings.model_dump_json(indent=2))
    return 0


# ---------------------------------------------------------------- calls


def call_state(call: Any) -> str:
    """``ended``, ``backstage`` (not ended, backstage on and not live) or ``open``: one word for ``call list``
    and ``call get`` alike."""
    if call.ended_at:
        return "ended"
    return "backstage" if call.backstage else "open"


def _participant_count(call: Any) -> int:
    return len(call.session.participants) if call.session else 0


def _call_summary(call: Any) -> str:
    members = ", ".join(f"{m.user_id}({m.role or 'call_member'})" for m in call.members) or "-"
    participants = ", ".join(p.user_id for p in (call.session.participants if call.session else [])) or "-"
    return (f"{call.cid}: {call_state(call)}, created by {call.created_by} at {call.created_at:%Y-%m-%d %H:%M:%S}\n"
            f"  members: {members}\n  participants ({_participant_count(call)}): {participants}\n"
            f"  custom: {json.dumps(call.custom)}\n"
            f"  team: {call.team or '-'}  starts_at: {call.starts_at or '-'}")


async def cmd_call(args: argparse.Namespace) -> int:
    async with _server_client(args) as sc:
        if args.action == "list":
            calls = await sc.list_calls()
            _out(args, _dump(calls), lambda: table(
                [[c.cid, call_state(c), c.created_by, _participant_count(c)] for c in calls],
                ["call", "state", "created_by", "participants"]))
            return 0
        call = sc.call(args.type, args.id)
        if args.action == "get":
            result = await call.get()
        elif args.action == "create":
            members = []
            for spec in args.member or []:
                user_id, _, role = spec.partition(":")
                members.append({"user_id": user_id, **({"role": role} if role else {})})
            data: dict[str, Any] = {"created_by_id": args.created_by, "members": members,
                                    "custom": args.custom or {},
                                    "settings_override": _parse_settings(args.settings or [])}
            if args.team:
                data["team"] = args.team
            if args.starts_at:
                data["starts_at"] = args.starts_at
            result = await call.get_or_create(data=data, ring=args.ring, notify=args.notify)
        elif args.action == "end":
            result = await call.end_call()
        elif args.action == "go-live":
            result = await call.go_live()
        else:
            result = await call.stop_live()
        _out(args, _dump(result), lambda: _call_summary(result.call))
    return 0


# ---------------------------------------------------------------- demo, walkthrough, devices, bench


async def cmd_walkthrough(args: argparse.Namespace) -> int:
    from signaling.walkthrough import run_embedded_walkthrough, run_walkthrough

    def show(step: Any) -> None:
        if not args.json:
            mark = "ok  " if step.ok else "FAIL"
            print(f"{mark} {step.ms:7.1f} ms  {step.name}\n       {step.detail}", flush=True)

    if args.against_url:
        if not args.api_key or not args.api_secret:
            raise InvalidRequest("--against-url needs the API key and secret")
        report = await run_walkthrough(args.url, args.api_key, args.api_secret, on_step=show)
    else:
        report = await run_embedded_walkthrough(on_step=show)
    _out(args, report.as_dict(), f"\n{sum(s.ok for s in report.steps)}/{len(report.steps)} steps ok "
                                 f"against {report.url}")
    return 0 if report.ok else 1


async def cmd_demo(args: argparse.Namespace) -> int:
    from signaling.demo import run_demo_cli

    return await run_demo_cli(args)


async def cmd_bot(args: argparse.Namespace) -> int:
    from signaling.bot import run_bot

    return await run_bot(args)


def cmd_devices(args: argparse.Namespace) -> int:
    import devices

    found = devices.list_devices()
    _out(args, found.to_dict(), lambda: devices.format_devices(found))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.__main__ import main as bench_main

    return int(bench_main(args.bench_args, prog="callrt bench") or 0)


# ---------------------------------------------------------------- parser


VALUE_OPTIONS = ("--url", "--api-key", "--api-secret")
"""The common options that take a value (the rest are flags)."""


def _common_options(*, inherited: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name.

    ``callrt``'s own parser holds the defaults (``--url`` is resolved by ``parse_args``); the copies on
    the subcommands are ``inherited``: set only when given there, so a value given before the
    subcommand survives, and one given after it wins.
    """
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if inherited else value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=default(None),
                        help=f"coordinator URL (default: CALLRT_URL, else {DEFAULT_URL})")
    common.add_argument("--api-key", default=default(os.environ.get("CALLRT_API_KEY")),
                        help="API key (default: CALLRT_API_KEY)")
    common.add_argument("--api-secret", default=default(os.environ.get("CALLRT_API_SECRET")),
                        help="API secret (default: CALLRT_API_SECRET)")
    common.add_argument("--json", action="store_true", default=default(False), help="print one JSON document")
    common.add_argument("-v", "--verbose", action="count", default=default(0), help="more logging (-vv: debug)")
    return common


def build_parser() -> argparse.ArgumentParser:
    """``callrt``'s parser; use ``parse_args``, which also fills in ``--url``'s default."""
    top = _common_options(inherited=False)
    common = _common_options(inherited=True)

    parser = argparse.ArgumentParser(prog="callrt", description=__doc__, parents=[top],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", parents=[common], help="run the coordinator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=cli_args.port, default=3080, help="1..65535 (default 3080)")
    p.add_argument("--db", default="callrt.db", help="SQLite file (or :memory:); also keeps the generated "
                   "development key pair, so it survives restarts")
    p.add_argument("--public-url", default=None, help="URL clients reach this server at")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL[,USER,CREDENTIAL]",
                   help="STUN/TURN server handed to participants, e.g. turn:coturn:3478,user,pass (repeat)")
    p.add_argument("--rate-limit", type=cli_args.non_negative, default=20.0, metavar="PER_S",
                   help="call creations plus joins a user may make per second (0: no limit)")
    p.add_argument("--rate-burst", type=cli_args.integer(1), default=50, metavar="N",
                   help="burst allowed above --rate-limit (>= 1)")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("token", parents=[common], help="mint a user token")
    p.add_argument("user_id")
    p.add_argument("--expires-in", type=cli_args.positive, default=None, help="seconds (> 0; default: never)")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("user", parents=[common], help="create/update or show a user")
    p.add_argument("action", choices=["upsert", "get"])
    p.add_argument("user_id")
    p.add_argument("--name")
    p.add_argument("--role", default="user", choices=ROLES)
    p.add_argument("--team", action="append")
    p.set_defaults(func=cmd_user)

    p = sub.add_parser("call-type", parents=[common], help="show and edit call types (roles and permissions)")
    ct = p.add_subparsers(dest="action", required=True)
    ct.add_parser("list", parents=[common])
    q = ct.add_parser("show", parents=[common])
    q.add_argument("name")
    q = ct.add_parser("create", parents=[common])
    q.add_argument("name")
    q.add_argument("--from", dest="copy_from", default=None, help="copy grants from this call type")
    q.add_argument("--settings", nargs="*", metavar="KEY.PATH=VALUE")
    for action in ("grant", "revoke"):
        q = ct.add_parser(action, parents=[common], help=f"{action} capabilities for a role")
        q.add_argument("name")
        q.add_argument("role", choices=ROLES)
        q.add_argument("capabilities", nargs="+", choices=CAPABILITIES, metavar="CAPABILITY")
    q = ct.add_parser("set", parents=[common], help="deep-merge settings, e.g. backstage.enabled=true")
    q.add_argument("name")
    q.add_argument("settings", nargs="+", metavar="KEY.PATH=VALUE")
    q = ct.add_parser("delete", parents=[common])
    q.add_argument("name")
    p.set_defaults(func=cmd_call_type)

    p = sub.add_parser("call", parents=[common], help="get, create, end calls (server-side)")
    cs = p.add_subparsers(dest="action", required=True)
    cs.add_parser("list", parents=[common])
    for action in ("get", "end", "go-live", "stop-live"):
        q = cs.add_parser(action, parents=[common])
        q.add_argument("type")
        q.add_argument("id")
    q = cs.add_parser("create", parents=[common])
    q.add_argument("type")
    q.add_argument("id")
    q.add_argument("--created-by", required=True, help="user id of the creator")
    q.add_argument("--member", action="append", metavar="USER[:ROLE]")
    q.add_argument("--custom", type=cli_args.json_object, help="JSON object")
    q.add_argument("--settings", nargs="*", metavar="KEY.PATH=VALUE")
    q.add_argument("--team")
    q.add_argument("--starts-at", type=cli_args.iso_time, help="ISO 8601 time, e.g. 2025-01-31T18:00:00+00:00")
    q.add_argument("--ring", action="store_true")
    q.add_argument("--notify", action="store_true")
    p.set_defaults(func=cmd_call)

    p = sub.add_parser("walkthrough", parents=[common], help="tour every call API operation on an embedded "
                                                              "coordinator")
    p.add_argument("--against-url", action="store_true", help="use the coordinator at --url instead")
    p.set_defaults(func=cmd_walkthrough)

    p = sub.add_parser("demo", parents=[common], help="the main job: an embedded coordinator and bots in a call")
    p.add_argument("--bots", type=cli_args.integer(2), default=2, help="participants (>= 2, default 2)")
    p.add_argument("--seconds", type=cli_args.positive, default=10.0, help="how long to run (> 0, default 10)")
    p.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    p.add_argument("--resolution", type=cli_args.resolution, default="640x480", metavar="WxH",
                   help="even width and height (default 640x480)")
    p.add_argument("--snapshot", default=None, metavar="PATH.png",
                   help="save received frames side by side to this image (an extension OpenCV writes)")
    p.add_argument("--against-url", action="store_true",
                   help="run the bots on the coordinator at --url (e.g. one you watch in the browser)")
    p.add_argument("--call-id", default=None, help="call id (default demo-<timestamp>)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bot", parents=[common], help="join a call on a running coordinator as a headless bot")
    p.add_argument("--call", required=True, help="TYPE:ID")
    p.add_argument("--user", default="bot", help="user id (token minted with --api-secret)")
    p.add_argument("--token", default=os.environ.get("CALLRT_TOKEN"), help="a user token instead of --user")
    p.add_argument("--create", action="store_true", help="create the call if missing")
    p.add_argument("--video", default="pattern", help="pattern[:WxH] | camera[:DEV] | file:PATH | screen[:DISPLAY]"
                                                     " | lavfi:GRAPH | none")
    p.add_argument("--audio", default="tone:440", help="tone[:HZ] | mic[:NAME] | file:PATH | none")
    p.add_argument("--resolution", type=cli_args.resolution, default="640x480", metavar="WxH",
                   help="even width and height (default 640x480)")
    p.add_argument("--speaker", action="store_true", help="play remote audio on the default output")
    p.add_argument("--no-subscribe", action="store_true", help="send only (auto_subscribe=False)")
    p.add_argument("--seconds", type=cli_args.non_negative, default=0.0,
                   help="leave after this long (0: until SIGINT/SIGTERM)")
    p.add_argument("--stats-interval", type=cli_args.positive, default=2.0, help="seconds (> 0, default 2)")
    p.set_defaults(func=cmd_bot)

    p = sub.add_parser("devices", parents=[common], help="list cameras, microphones and speakers")
    p.set_defaults(func=cmd_devices)

    # ``main`` hands everything after ``bench`` to the benchmarks' own parser (``callrt bench --help``)
    p = sub.add_parser("bench", parents=[common], add_help=False,
                       help="run benchmarks (python -m benchmarks; callrt bench --help lists them)")
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)

    add_swarm_parser(sub)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; ``--url`` given nowhere is ``CALLRT_URL`` or the default (``swarm``: None,
    meaning a coordinator of its own)."""
    args = build_parser().parse_args(argv)
    if args.url is None and args.command != "swarm":
        args.url = os.environ.get("CALLRT_URL", DEFAULT_URL)
    return args


def bench_split(argv: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """``(callrt's options, the benchmarks' arguments)`` when the command is ``bench``, else None.

    The command is the first word that is neither an option nor the value of one of ``VALUE_OPTIONS``;
    everything after ``bench`` goes to ``python -m benchmarks``'s parser unchanged.
    """
    expects_value = False
    for i, word in enumerate(argv):
        if expects_value:
            expects_value = False
        elif word.startswith("--") and len(word) > 2:
            # argparse accepts unambiguous prefixes (--ur X), so match those too
            expects_value = "=" not in word and any(o.startswith(word) for o in VALUE_OPTIONS)
        elif word.startswith("-") and word != "-":
            continue
        else:
            return (list(argv[:i]), list(argv[i + 1:])) if word == "bench" else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = bench_split(argv)
    if split is not None:
        args = parse_args([*split[0], "bench"])
        args.bench_args = split[1]
    else:
        args = parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        result = args.func(args)
        if asyncio.iscoroutine(result):
            result = event_loop.run(result)  # uvloop where installed (signaling.event_loop)
        return int(result or 0)
    except CallrtError as exc:
        return print_error("callrt", exc, bool(args.json))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
