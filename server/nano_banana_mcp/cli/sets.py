"""``nano-banana-mcp sets``: the named reference sets an agent uses as ``nano-banana://sets/NAME`` (add, list, show,
remove), in the same ledger and image store as the server's, so a set made here is the server's too."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from nano_banana_mcp.cli.arguments import Parser
from nano_banana_mcp.cli.exits import EXIT_OK
from nano_banana_mcp.cli.settings import add_settings_flags
from nano_banana_mcp.tasks.records import DEFAULT_TENANT
from nano_banana_mcp.tasks.sets import MAX_SET_IMAGES
from nano_banana_mcp.terminal import printable

if TYPE_CHECKING:
    from nano_banana_mcp.config import Settings
    from nano_banana_mcp.tasks import Service
    from nano_banana_mcp.tasks.sets import ReferenceSet

__all__ = ["add_parser", "run"]


def _index(text: str) -> int:
    """An image's number in its set: 0 or more."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not an image number: images are numbered 0, 1, 2, ...")
    return int(text)


def add_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    """``sets add NAME FILE...``, ``sets list``, ``sets show NAME``, ``sets remove NAME [INDEX]``."""
    sets = sub.add_parser(
        "sets",
        help="named reference sets (a character, a style) that any later call uses as nano-banana://sets/NAME",
        description="Named reference sets: images kept in order under a name, that generate_image's images (or "
        "generate --image) use as nano-banana://sets/NAME in any later call, on any replica.",
        epilog="example: nano-banana-mcp sets add hero hero-front.png hero-side.png && nano-banana-mcp generate "
        '"the hero in a forest" --image nano-banana://sets/hero',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = sets.add_subparsers(dest="sets_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help=f"add images to a set, made if new (at most {MAX_SET_IMAGES} in a set)")
    add.add_argument("name", help="the set's name: 1 to 32 letters, digits, '-', '_' or '.' (case-folded)")
    add.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="a path, an https:// URL, a data: URI or nano-banana://tasks/ID/images/N",
    )
    listing = actions.add_parser("list", help="your sets and their sizes")
    show = actions.add_parser("show", help="a set's images, numbered from 0")
    show.add_argument("name")
    remove = actions.add_parser("remove", help="remove a set, or (with INDEX) one of its images")
    remove.add_argument("name")
    remove.add_argument("index", nargs="?", type=_index, help="the image's number, as `sets show` prints it")
    for parser in (add, listing, show, remove):
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument("--tenant", default=DEFAULT_TENANT, help="whose sets, on a team server (default: default)")
        add_settings_flags(parser)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one ``sets`` action and print what it left (or JSON)."""
    from nano_banana_mcp.runtime import open_service  # noqa: PLC0415

    async with open_service(settings) as service:
        if args.sets_command == "list":
            listed = await service.sets.list_sets(args.tenant)
            if args.json:
                print(listed.model_dump_json(indent=2))
                return EXIT_OK
            if not listed.sets:
                print("No sets yet. Make one: nano-banana-mcp sets add NAME IMAGE...", file=sys.stderr)
            for summary in listed.sets:
                when = summary.updated_at.astimezone().strftime("%Y-%m-%d %H:%M")
                print(printable(f"{summary.uri:<48} {summary.size:>2} image{'s' * (summary.size != 1)}  {when}"))
            return EXIT_OK
        shown = await _change(service, args)
    if args.json:
        print(shown.model_dump_json(indent=2) if shown is not None else "null")
    elif shown is None:
        print(printable(f"Removed set {args.name.strip().casefold()}."))
    else:
        _print(shown)
    return EXIT_OK


async def _change(service: Service, args: argparse.Namespace) -> ReferenceSet | None:
    """``add``, ``show`` or ``remove``: the set as it is afterwards (None: removed)."""
    if args.sets_command == "show":
        return await service.sets.get(args.name, args.tenant)
    if args.sets_command == "remove":
        return await service.sets.remove(args.name, args.index, args.tenant)
    shown = None
    for image in args.images:  # each checked and kept in turn: what was added before a refusal stays
        ref = await service.references.read_one(image, None, args.tenant)
        shown, _ = await service.sets.add(args.name, ref, args.tenant)
    return shown


def _print(shown: ReferenceSet) -> None:
    count = len(shown.images)
    print(printable(f"{shown.uri}: {count} image{'s' * (count != 1)}"))
    for image in shown.images:
        print(
            printable(
                f"  {image.index:>2}  {image.mime_type:<10} {image.size_bytes:>9,} bytes  sha256 {image.sha256[:16]}"
            )
        )
