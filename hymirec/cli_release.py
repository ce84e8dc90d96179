"""`hymirec release show | activate | rollback | migrate`: the registry's releases, made current or rolled back as a
whole, and stored histories moved to the current release's codebook.

    hymirec release show     --root ARTIFACT_ROOT
    hymirec release activate --root ARTIFACT_ROOT --version N [--triton-url HOST:PORT] [--target local|production]
    hymirec release rollback --root ARTIFACT_ROOT [--triton-url HOST:PORT] [--target local|production]
    hymirec release migrate  --root ARTIFACT_ROOT --log USERS.inter [--store-config FILE]

The root defaults to HYMIREC_RELEASE_ROOT (what the chart gives serving and the stream processor), and the
Triton URL to HYMIREC_TRITON_URL. orchestration/releases.py has the steps and their order.
"""
from __future__ import annotations

import argparse
import json
import os


def _root(args: argparse.Namespace) -> str:
    root = args.root or os.environ.get("HYMIREC_RELEASE_ROOT")
    if not root:
        raise ValueError("no artifact root: pass --root or set HYMIREC_RELEASE_ROOT")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"artifact root {root} does not exist")
    return root


def _triton(args: argparse.Namespace) -> dict:
    url = args.triton_url if args.triton_url is not None else os.environ.get("HYMIREC_TRITON_URL", "")
    url = "" if url.strip().lower() in ("", "off", "none") else url.strip().removeprefix("grpc://")
    return {"triton_url": url or None, "target": args.target, "settle_s": args.settle_s}


def _show(args: argparse.Namespace) -> int:
    from orchestration.releases import show

    print(json.dumps(show(_root(args)), indent=2))
    return 0


def _activate(args: argparse.Namespace) -> int:
    from orchestration.releases import activate

    print(json.dumps(activate(_root(args), args.version, **_triton(args)), indent=2, default=str))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from orchestration.releases import rollback

    print(json.dumps(rollback(_root(args), **_triton(args)), indent=2, default=str))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from features.store import StoreConfig, open_store
    from orchestration.releases import migrate_to_current

    config = StoreConfig.from_file(args.store_config) if args.store_config else StoreConfig.from_env()
    with open_store(config, apply=False) as store:
        print(json.dumps(migrate_to_current(_root(args), store, args.log, progress=True), indent=2, default=str))
    return 0


def register(sub) -> None:
    release = sub.add_parser("release", help="show, activate or roll back a whole release (registry pointer)",
                             description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = release.add_subparsers(dest="release_command", required=True)
    for name, handler, text in (("show", _show, "the current release, the rollback target, every release"),
                                ("activate", _activate, "make release N current (Triton, registry, alias)"),
                                ("rollback", _rollback, "make the previous release current again"),
                                ("migrate", _migrate, "move stored histories to the current release's codebook")):
        cmd = cmds.add_parser(name, help=text)
        cmd.add_argument("--root", help="artifact root holding registry.json (env HYMIREC_RELEASE_ROOT)")
        if name == "activate":
            cmd.add_argument("--version", type=int, required=True, help="release version (registry entry)")
        if name == "migrate":
            cmd.add_argument("--log", required=True, help="interaction log (.inter: user, item, timestamp) naming "
                                                          "the users to migrate and their items, e.g. a retrain's "
                                                          "snapshot/snapshot.inter")
            cmd.add_argument("--store-config", help="online store config file (env HYMIREC_FEAST_REPO / "
                                                    "HYMIREC_STORE_*)", default=os.environ.get("HYMIREC_FEAST_REPO"))
        elif name != "show":
            cmd.add_argument("--triton-url", help="Triton gRPC host:port in explicit model control, 'off' for none "
                                                  "(env HYMIREC_TRITON_URL)")
            cmd.add_argument("--target", choices=("local", "production"), default=None,
                             help="Triton repository under <root>/triton (env HYMIREC_TRITON_TARGET, default local)")
            cmd.add_argument("--settle-s", type=float, default=None,
                             help="seconds between the flip and unloading the old Triton version "
                                  "(env HYMIREC_RELEASE_SETTLE_S, default 3)")
        cmd.set_defaults(handler=handler)
