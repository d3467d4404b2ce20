"""``coolpilot bacnet discover``: find BACnet devices and list their objects for the point map.

It binds CoolPilot's own BACnet device at ``--local`` (or the config's
``[bacnet] local_address``), sends Who-Is (to ``--target``, else a global broadcast),
and prints each answering device's objects (type, instance, name) and a
``[bacnet.devices]`` / ``[bacnet.points]`` skeleton to paste into the config.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from coolpilot.cli_common import CliError, add_json_arg, emit, progress

DEFAULT_LOCAL = "127.0.0.1:47808"


def register(subparsers: Any) -> None:
    b = subparsers.add_parser("bacnet", help="BACnet/IP tools (discover a BMS's devices and objects)")
    bsub = b.add_subparsers(dest="bacnet_command", metavar="SUBCOMMAND")
    d = bsub.add_parser("discover", help="Who-Is, then list each device's objects and names",
                        description="Send Who-Is and read each answering device's object list and names, "
                                    "to help write the [bacnet] point map.")
    d.add_argument("--local", metavar="ADDRESS", default=None,
                   help=f"our own BACnet/IP address, e.g. 10.0.0.9/24:47808 (default: the config's "
                        f"[bacnet] local_address, else {DEFAULT_LOCAL})")
    d.add_argument("--target", metavar="ADDRESS", default=None,
                   help="ask one device, e.g. 10.0.0.5:47808 (default: a global broadcast)")
    d.add_argument("--config", metavar="FILE", default=None, help="take local_address and the instance from it")
    d.add_argument("--timeout", type=float, default=3.0, metavar="S", help="how long to collect I-Am answers [s]")
    add_json_arg(d)
    d.set_defaults(func=cmd_discover)
    b.set_defaults(func=lambda _args: _usage(b))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _settings(args: argparse.Namespace) -> Any:
    from controller.config import ConfigError, load_config
    from controller.config_bacnet import BacnetSettings, check_address

    try:
        base = load_config(args.config).bacnet if args.config else None
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    local = args.local or (base.local_address if base is not None else DEFAULT_LOCAL)
    try:
        check_address(local)
        if args.target is not None:
            check_address(args.target)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not 0.0 < args.timeout <= 60.0:
        raise CliError(f"--timeout {args.timeout}: must be in (0, 60] s")
    instance = base.local_device_instance if base is not None else BacnetSettings().local_device_instance
    return local, instance


def cmd_discover(args: argparse.Namespace) -> int:
    from controller.service.bacnet.client import BacnetClient, BacnetError
    from controller.service.bacnet.discovery import discover

    local, instance = _settings(args)
    progress(f"Who-Is from {local} to {args.target or 'the global broadcast'}, waiting {args.timeout:g} s")
    try:
        client = BacnetClient(local, device_instance=instance)
    except (BacnetError, OSError) as exc:
        raise CliError(f"cannot bind BACnet/IP at {local}: {exc}") from None
    try:
        devices = discover(client, args.target, timeout_s=args.timeout)
    except BacnetError as exc:
        raise CliError(f"discovery failed: {exc}") from None
    finally:
        client.close()
    emit(args, {"devices": [asdict(d) for d in devices]}, _human(devices))
    return 0 if devices else 1


def _human(devices: list[Any]) -> str:
    if not devices:
        return "no device answered (check --local's interface and --target)"
    lines = []
    for d in devices:
        lines.append(f"device {d.instance} at {d.address}" + (f": object list unreadable: {d.error}" if d.error else ""))
        lines.extend(f"  {o.object:<16} {o.instance:>8}  {o.name}" for o in d.objects)
    lines.append("\n# point map skeleton: keep the rows you need and name each one's role")
    lines.append("[bacnet.devices]")
    lines.extend(f'{d.instance} = "{d.address}"' for d in devices)
    for d in devices:
        for o in d.objects:
            lines.append(f'# [bacnet.points.ROLE]  # {o.name}\n# device = {d.instance}\n# object = "{o.object}"\n'
                         f"# instance = {o.instance}")
    return "\n".join(lines)
