"""`rillet-campaign`: issue 10's integrity campaigns, at full size, one JSON line each.

    FUZZ    malformed frames against the SC (admin and control links) and the SPU (campaign_fuzz.py)
    TAILS   torn and damaged active-segment tails recovered to the last whole batch (campaign_tails.py)
    ATTACK  memory and connection attacks on an SPU while a normal client is timed (campaign_attack.py)

FUZZ and ATTACK each start a 1-SPU cluster of their own in a temporary directory (stopped in a
finally); TAILS works on files in a temporary directory. Exit 0 when every campaign run was clean
(FUZZ: no crash, no poison batch acknowledged or stored, no handler traceback, a normal client
served after; TAILS: no mismatch; ATTACK: same SPU pid, peak RSS within the bound, no failed
round of the normal client, the admin CLI served during the crowd), 1 otherwise, 2 for bad flags.

    rillet-campaign                                   # FUZZ,TAILS,ATTACK at full size
    rillet-campaign --campaign FUZZ --frames 50000 --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile

CAMPAIGNS = ("FUZZ", "TAILS", "ATTACK")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _campaigns(text: str) -> list[str]:
    names = [n.strip().upper() for n in text.split(",") if n.strip()]
    if not names or any(n not in CAMPAIGNS for n in names):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(CAMPAIGNS)}, got {text!r}")
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)     # one line, not the usage block
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rillet-campaign", description=__doc__.splitlines()[0])
    p.add_argument("--campaign", type=_campaigns, default=list(CAMPAIGNS), help="comma-separated FUZZ, TAILS, ATTACK")
    p.add_argument("--frames", type=_positive, default=10_000, help="FUZZ: malformed frames (default 10000)")
    p.add_argument("--tails", type=_positive, default=10_000, help="TAILS: damaged tails (default 10000)")
    p.add_argument("--seed", type=int, default=None, help="FUZZ and TAILS: the generator's seed (default random)")
    return p


def run(name: str, args: argparse.Namespace, seed: int) -> tuple[dict, bool]:
    from rillet.testing import LocalCluster
    if name == "TAILS":
        from .campaign_tails import clean, run_tails
        report = run_tails(args.tails, seed)
        return report, clean(report)
    with tempfile.TemporaryDirectory(prefix="rillet-campaign-") as home, LocalCluster(spus=1, home=home) as cluster:
        if name == "FUZZ":
            from .campaign_fuzz import clean, run_fuzz
            report = run_fuzz(cluster, args.frames, seed)
        else:
            from .campaign_attack import clean, run_attack
            report = run_attack(cluster)
        return report, clean(report)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    ok = True
    for name in args.campaign:
        try:
            report, clean = run(name, args, seed)
        except Exception as exc:  # noqa: BLE001 - one failed campaign is reported, the next still runs
            report, clean = {"campaign": name, "error": f"{type(exc).__name__}: {exc}"}, False
        report["clean"] = clean
        print(json.dumps(report), flush=True)
        ok = ok and clean
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
