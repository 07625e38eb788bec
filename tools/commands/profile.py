"""`rillet profile current | list | switch NAME | delete NAME` (Fluvio's `fluvio profile`).

Profiles live in ``$RILLET_HOME/profiles.json`` (ipc/profiles.py). `rillet cluster start`
adds one per cluster and makes it current; these commands only read, switch and
delete. `--cluster` and ``$RILLET_CLUSTER`` still override the current profile.
"""

from __future__ import annotations

import argparse

from rillet.ipc import profiles
from rillet.ipc.errors import InvalidArgument
from rillet.ipc.names import rillet_home, validate_name
from rillet.tools.args import EXIT_OK, say
from rillet.tools.output import FORMATS, render


def profile_name(text: str) -> str:
    try:
        return validate_name(text, "profile")
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_current(args) -> int:
    known = profiles.load(rillet_home())
    if known.current is None:
        raise InvalidArgument("no current profile (start a cluster, or: rillet profile switch NAME)")
    print(known.current)
    return EXIT_OK


def cmd_list(args) -> int:
    known = profiles.load(rillet_home())
    rows = [dict(current=n == known.current, profile=n, cluster=c) for n, c in sorted(known.clusters.items())]
    if args.output == "table":
        for r in rows:
            r["mark"] = "*" if r["current"] else ""
    print(render(rows, [("", "mark"), ("PROFILE", "profile"), ("CLUSTER", "cluster")], args.output))
    return EXIT_OK


def cmd_switch(args) -> int:
    home = rillet_home()
    profiles.save(home, profiles.load(home).switched_to(args.name))
    say(f"switched to profile {args.name!r}")
    return EXIT_OK


def cmd_delete(args) -> int:
    home = rillet_home()
    known = profiles.load(home)
    profiles.save(home, known.without(args.name))
    say(f"profile {args.name!r} deleted")
    if known.current == args.name:
        say("warning: this was the current profile; commands go to 'local' until "
            "`rillet profile switch NAME` or `rillet cluster start`")
    return EXIT_OK


def register(sub) -> None:
    from rillet.tools.args import Parser
    profile = sub.add_parser("profile", help="which cluster commands and Fluvio.connect() go to")
    psub = profile.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    psub.required = True
    psub.add_parser("current", help="print the current profile").set_defaults(func=cmd_current)
    lst = psub.add_parser("list", help="list profiles (* marks the current one)")
    lst.add_argument("-O", "--output", choices=FORMATS, default="table")
    lst.set_defaults(func=cmd_list)
    switch = psub.add_parser("switch", help="make a profile current")
    switch.add_argument("name", type=profile_name)
    switch.set_defaults(func=cmd_switch)
    delete = psub.add_parser("delete", help="delete a profile (its cluster and data stay)")
    delete.add_argument("name", type=profile_name)
    delete.set_defaults(func=cmd_delete)
