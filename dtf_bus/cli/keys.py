"""``dtf keys``: CURVE keypairs for nodes and API keys for the HTTP API.

    dtf keys generate DIR [--name NAME] [--force]     NAME.key (public) + NAME.key_secret (0600)
    dtf keys authorize PUBLIC_KEY DIR --role R         admit a node as worker|client|admin (within a second)
    dtf keys api-key create --role admin|read [--name LABEL] [--file FILE]
    dtf keys api-key list [--file FILE] [--json]
    dtf keys api-key revoke ID [--file FILE]

The API-key file defaults to ``$DTF_API_KEYS``, else ``./dtf-api-keys.json``; it holds hashes
only, so a created key is printed once and never again.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from dtf_bus import defaults
from dtf_bus.security import apikeys, keyfiles, roles

EXIT_OK, EXIT_USAGE = 0, 2


def add_parser(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="CURVE keypairs for nodes, API keys for the HTTP API")
    ksub = keys.add_subparsers(dest="keys_command", required=True)

    p = ksub.add_parser("generate", help="write a CURVE keypair in zmq's certificate format")
    p.add_argument("dir", help="directory for NAME.key and NAME.key_secret")
    p.add_argument("--name", default=socket.gethostname(), help="file name stem (default: this host's name)")
    p.add_argument("--force", action="store_true", help="overwrite an existing keypair of that name")
    p.set_defaults(keys_func=_generate)

    p = ksub.add_parser("authorize", help="admit a public key into the broker's authorized-keys directory")
    p.add_argument("public_key", help="a NAME.key file")
    p.add_argument("dir", help="the directory given to dtf-broker --authorized-keys")
    p.add_argument(
        "--role",
        choices=roles.ROLES,
        required=True,
        help="worker: register and run tasks; client: submit, watch and cancel its own jobs; admin: everything",
    )
    p.set_defaults(keys_func=_authorize)

    api = ksub.add_parser("api-key", help="keys for the HTTP API (stored as hashes)")
    asub = api.add_subparsers(dest="api_command", required=True)
    file_help = f"key file (default ${defaults.API_KEYS_ENV} or {defaults.API_KEYS_FILE})"

    p = asub.add_parser("create", help="make a key and print it once")
    p.add_argument("--role", choices=apikeys.ROLES, required=True, help="read: read endpoints; admin: everything")
    p.add_argument("--name", default="", help="a label shown by list")
    p.add_argument("--file", help=file_help)
    p.set_defaults(keys_func=_api_create)

    p = asub.add_parser("list", help="stored keys (ids, roles, labels; never the keys)")
    p.add_argument("--file", help=file_help)
    p.add_argument("--json", action="store_true")
    p.set_defaults(keys_func=_api_list)

    p = asub.add_parser("revoke", help="delete a key by id (the broker stops accepting it at once)")
    p.add_argument("id")
    p.add_argument("--file", help=file_help)
    p.set_defaults(keys_func=_api_revoke)


def run(args: argparse.Namespace) -> int:
    try:
        return args.keys_func(args)
    except (keyfiles.SecurityError, apikeys.ApiKeyError) as exc:
        print(f"dtf keys: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"dtf keys: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE


def _generate(args: argparse.Namespace) -> int:
    public, secret = keyfiles.generate(args.dir, args.name, overwrite=args.force)
    print(f"public key  {public}   (give to the broker's --authorized-keys dir, or to clients as --broker-key)")
    print(f"secret key  {secret}   (keep private: this node's --curve-secret)")
    return EXIT_OK


def _authorize(args: argparse.Namespace) -> int:
    target = keyfiles.authorize(args.public_key, args.dir, args.role)
    print(f"authorized {target} as {args.role}")
    return EXIT_OK


def _api_create(args: argparse.Namespace) -> int:
    path = args.file or apikeys.default_path()
    key, record = apikeys.create(path, args.role, args.name)
    print(key)
    print(f"{record['role']} key {record['id']} stored (as a hash) in {path}; it is not shown again", file=sys.stderr)
    return EXIT_OK


def _api_list(args: argparse.Namespace) -> int:
    keys = apikeys.listing(args.file or apikeys.default_path())
    if args.json:
        print(json.dumps(keys, indent=2))
        return EXIT_OK
    if not keys:
        print("no API keys")
    for k in keys:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(k.get("created_at", 0)))
        print(f"{k['id']}  {k['role']:<5}  {created}  {k.get('name', '')}".rstrip())
    return EXIT_OK


def _api_revoke(args: argparse.Namespace) -> int:
    path = args.file or apikeys.default_path()
    if not apikeys.revoke(path, args.id):
        print(f"dtf keys: no API key with id {args.id!r} in {path}", file=sys.stderr)
        return EXIT_USAGE
    print(f"revoked API key {args.id}")
    return EXIT_OK
