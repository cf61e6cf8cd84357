"""`styleloop adapters list|show|activate`: the llm's adapter registry by hand.

``activate`` writes the registry's ``active.json``, which a running llm service reads
again within ``ADAPTER_POLL_S`` (the same file its ``SetActiveAdapter`` writes); ``base``
serves the base model alone."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from styleloop.commands import adapters_dir_argument


def register(commands: Any) -> None:
    parser = commands.add_parser("adapters", help="list, show and activate LoRA adapters")
    adapters_dir_argument(parser)
    sub = parser.add_subparsers(dest="adapters_command", required=True, metavar="WHAT")
    sub.add_parser("list", help="every adapter, newest first; * marks the active one")
    show = sub.add_parser("show", help="one adapter's base model, parent and metrics")
    show.add_argument("adapter_id")
    activate = sub.add_parser("activate", help="serve this adapter ('base': none)")
    activate.add_argument("adapter_id")

    def main(args: argparse.Namespace) -> int:
        from services.llm.adapters import BASE_MODEL, AdapterRegistry
        from styleloop.runtime.errors import StyleLoopError

        registry = AdapterRegistry(args.adapters_dir)
        try:
            if args.adapters_command == "list":
                active = registry.read_active()
                adapters = registry.list()
                if not adapters:
                    print(f"no adapters in {args.adapters_dir}")  # noqa: T201
                for info in adapters:
                    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(info.create_time))
                    mark = "*" if info.adapter_id == active else " "
                    print(  # noqa: T201 - the command's output
                        f"{mark} {info.adapter_id:40} {when}  parent={info.parent or 'base'}"
                    )
                print(f"active: {active or 'base model'}")  # noqa: T201
            elif args.adapters_command == "show":
                info = registry.get(args.adapter_id)
                print(json.dumps({**info.to_json(), "path": str(info.path)}, indent=2))  # noqa: T201
            else:
                target = ""
                if args.adapter_id != BASE_MODEL:
                    target = registry.get(args.adapter_id).adapter_id
                registry.write_active(target)
                print(f"active: {target or 'base model'}")  # noqa: T201
        except StyleLoopError as exc:
            sys.stderr.write(f"styleloop adapters: {exc.message}\n")
            return 2
        return 0

    parser.set_defaults(func=main)
