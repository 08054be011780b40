"""``python -m molecule_box_fly.emulator``: serve the emulated Machines API until interrupted."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys

import trio

from . import DOCKER_LABEL, Emulator, Faults, serve


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m molecule_box_fly.emulator",
        description="Serve an emulated Fly Machines API (point FLY_API_BASE_URL at http://HOST:PORT/v1).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4280, help="port (default 4280; 0 picks a free one)")
    parser.add_argument("--token", default=os.environ.get("FLY_API_TOKEN", ""),
                        help="the API token clients must send (default $FLY_API_TOKEN)")
    parser.add_argument("--app", action="append", default=[],
                        help="an app that exists (repeatable; default $FLY_WORKSPACE_APP or molecule-workspaces)")
    parser.add_argument("--docker-image", default=None,
                        help="back each started machine with a container of this local image (host network)")
    for field in dataclasses.fields(Faults):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=type(field.default), default=field.default, help=f"fault/latency knob "
                            f"(default {field.default}; also settable with POST /_emulator/faults)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.token:
        sys.exit("emulator: give the API token with --token or FLY_API_TOKEN")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    apps = set(args.app) or {os.environ.get("FLY_WORKSPACE_APP") or "molecule-workspaces"}
    faults = Faults(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Faults)})
    emulator = Emulator(token=args.token, apps=apps, faults=faults, docker_image=args.docker_image)

    async def run() -> None:
        # SIGTERM (what a service manager or a test sends) ends it like ^C: its containers are removed first.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve, emulator, args.host, args.port)
                backed = f"; machines are containers labelled {DOCKER_LABEL}={emulator.id}" if args.docker_image else ""
                print(f"emulator: Machines API at http://{args.host}:{port}/v1 (apps: {', '.join(sorted(apps))})"
                      f"{backed}", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
