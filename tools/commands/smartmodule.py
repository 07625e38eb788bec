"""`rillet smartmodule create | list | delete`: SmartModules stored in the cluster (Fluvio's shape).

``create NAME --wasm-file PATH`` stores a .wasm once the SC has checked it is a SmartModule;
``list`` shows SMARTMODULE, SIZE (and what it runs); ``delete NAME...`` removes them, one line
each, as Fluvio prints.
"""

from __future__ import annotations

import argparse

from rillet.ipc.errors import InvalidArgument
from rillet.ipc.names import validate_name
from rillet.tools.args import EXIT_FAILED, EXIT_OK, Parser, say
from rillet.tools.output import FORMATS, render

COLUMNS = [("SMARTMODULE", "name"), ("SIZE", "size_text"), ("TRANSFORM", "transform")]


def module_name(text: str) -> str:
    try:
        return validate_name(text, "smartmodule")
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def human_size(n: int) -> str:
    """``70.9 KB``: decimal units, as Fluvio's listing (bytesize) prints them."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def cmd_create(args) -> int:
    from rillet import FluvioAdmin
    with FluvioAdmin.connect(args.cluster) as admin:
        admin.create_smartmodule(args.name, args.wasm_file, args.dry_run)
    print(f'smartmodule "{args.name}" {"checked (dry run)" if args.dry_run else "has been created."}')
    return EXIT_OK


def cmd_list(args) -> int:
    from rillet import FluvioAdmin
    with FluvioAdmin.connect(args.cluster) as admin:
        modules = admin.list_smartmodules([])
    rows = [dict(name=s.info.name, size=s.info.size, transform=s.info.transform, sha256=s.info.sha256,
                 created_ms=s.info.created_ms) for s in modules]
    if args.output != "table":
        print(render(rows, [], args.output))
        return EXIT_OK
    if not rows:
        say("no smartmodules")
        return EXIT_OK
    for row in rows:
        row["size_text"] = human_size(row["size"])
    print(render(rows, COLUMNS, "table"))
    return EXIT_OK


def cmd_delete(args) -> int:
    from rillet import FluvioAdmin, RilletError
    failed = None
    with FluvioAdmin.connect(args.cluster) as admin:
        for module in args.names:
            try:
                admin.delete_smartmodule(module)
            except RilletError as exc:
                if not args.continue_on_error:
                    raise
                failed = exc
                print(f'smart module "{module}" delete failed with: {exc}')
                continue
            print(f'smartmodule "{module}" deleted')
    if failed is not None:
        say(f"error: {failed}")
        return EXIT_FAILED
    return EXIT_OK


def register(sub) -> None:
    sm = sub.add_parser("smartmodule", help="SmartModules stored in the cluster")
    ssub = sm.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    ssub.required = True
    create = ssub.add_parser("create", help="store a .wasm SmartModule under a name")
    create.add_argument("name", type=module_name)
    create.add_argument("--wasm-file", required=True, metavar="PATH", help="the compiled SmartModule (.wasm)")
    create.add_argument("--dry-run", action="store_true", help="check it, store nothing")
    create.set_defaults(func=cmd_create)
    lst = ssub.add_parser("list", help="list stored SmartModules")
    lst.add_argument("-O", "--output", choices=FORMATS, default="table")
    lst.set_defaults(func=cmd_list)
    delete = ssub.add_parser("delete", help="delete stored SmartModules")
    delete.add_argument("names", nargs="+", metavar="NAME")
    delete.add_argument("-c", "--continue-on-error", action="store_true", help="go on with the next name after a failure")
    delete.set_defaults(func=cmd_delete)
