"""Command line: `appliance serve | say | bench | doctor | report | token | rotate-token | hub-key` (also
`python -m appliance …`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .config import ApplianceConfig, ConfigError, load_config
from .log_redaction import RedactSecrets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance", description="Private streaming text-to-speech appliance.")
    parser.add_argument("--config", type=Path, help="TOML configuration file (default /etc/appliance/config.toml)")
    parser.add_argument("--voices", type=Path, help="folder of extra Piper voices (NAME.onnx + NAME.onnx.json)")
    parser.add_argument("--state", type=Path, help="state folder (keys, token, caches)")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)

    say = commands.add_parser("say", help="synthesise text to a file, offline")
    say.add_argument("text")
    say.add_argument("-o", "--output", type=Path, required=True, help="out.ogg (Opus), out.wav or out.pcm")
    say.add_argument("--voice")
    say.add_argument("--speaker")
    say.add_argument("--seed", type=int)

    bench = commands.add_parser("bench", help="time to first audio and real-time factor, as JSON")
    bench.add_argument("--voice")
    bench.add_argument("--repeat", type=int, default=3)
    bench.add_argument("--backend", choices=["cpu", "npu", "auto"], default="auto")

    commands.add_parser("doctor", help="report the NPU, its runtime, the voice bundles; run one inference per core")
    report = commands.add_parser("report", help="doctor, bench on NPU and CPU, versions and bundle figures in one "
                                                "JSON file, to paste into an issue")
    report.add_argument("-o", "--output", type=Path, default=Path("appliance-report.json"))
    report.add_argument("--voice")
    report.add_argument("--repeat", type=int, default=3)
    commands.add_parser("token", help="print the token remote clients must send (created on first use)")
    commands.add_parser("rotate-token", help="replace the token; remote clients need the new one")
    commands.add_parser("hub-key", help="print the authorized_keys line to install on the hub")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())
    try:
        config = load_config(args.config, overrides=_overrides(args))
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    return COMMANDS[args.command](config, args)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    flags = {
        "server.host": getattr(args, "host", None),
        "server.port": getattr(args, "port", None),
        "voices.folder": args.voices,
        "service.state_folder": args.state,
    }
    if getattr(args, "backend", None) == "cpu":
        flags["npu.enabled"] = False
    return {k: v for k, v in flags.items() if v is not None}


def run_serve(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from .daemon import serve
    from .service.journal import log_handler
    from .transports.listener import ListenError

    handler = log_handler()
    handler.addFilter(RedactSecrets())
    logging.getLogger().handlers[:] = [handler]
    try:
        serve(config)
    except ListenError as e:
        print(f"error: {e} (server.host, server.port, wyoming.port or tunnel.listener_port)", file=sys.stderr)
        return 2
    return 0


def run_say(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from .offline import synthesize_to_file

    try:
        seconds = asyncio.run(synthesize_to_file(config, args.text, args.output, args.voice, args.speaker, args.seed))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({seconds:.2f} s of audio)")
    return 0


def run_bench(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from .bench import run_benchmark

    results = asyncio.run(run_benchmark(config, args.voice, args.repeat))
    print(json.dumps(results, indent=2))
    if args.backend == "npu" and results["backend"] != "npu":
        print(f"error: the NPU is not in use: {results['backend_reason']}", file=sys.stderr)
        return 1
    return 0


def run_doctor(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from .doctor import diagnose

    report = diagnose(config)
    print(json.dumps(report, indent=2))
    return 0 if report["npu_usable"] else 1


def run_report(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from .board_report import board_report

    report = asyncio.run(board_report(config, args.repeat, args.voice))
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    npu = report["bench"]["npu"]
    print(f"wrote {args.output}: NPU {'benchmarked' if 'texts' in npu else 'skipped: ' + npu['skipped']}; "
          f"please attach it to your issue")
    return 0


def run_token(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from .security.commands import print_token

    print_token(config.service.state_folder)
    return 0


def run_rotate_token(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from .security.commands import print_rotated_token

    print_rotated_token(config.service.state_folder)
    return 0


def run_hub_key(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from .security.commands import print_hub_key

    if not 0 < config.tunnel.remote_port < 65536:
        print("configuration error: tunnel.remote_port must be set to the hub port forwarded to this appliance "
              "(1-65535)", file=sys.stderr)
        return 2
    print_hub_key(config)
    return 0


COMMANDS = {
    "serve": run_serve,
    "say": run_say,
    "bench": run_bench,
    "doctor": run_doctor,
    "report": run_report,
    "token": run_token,
    "rotate-token": run_rotate_token,
    "hub-key": run_hub_key,
}
