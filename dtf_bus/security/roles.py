"""Who may send what on the bus: the role an authorized CURVE key carries.

With CURVE on, every key in the broker's authorized-keys directory carries a role
(``dtf keys authorize KEY DIR --role worker|client|admin``), and the broker checks it for the
messages that act on the fleet:

- ``worker`` registers and then speaks the worker's side of the protocol (heartbeats,
  results); it can ping and fetch shipped code by hash, and nothing else: a stolen worker key
  cannot submit a shell task (nor upload code for one).
- ``client`` submits jobs (and uploads the code they ship), watches them, reads results and
  the worker list, and cancels the jobs it submitted itself. It cannot register (a client key
  posing as a 64-slot worker would receive other people's tasks and forge their results), fetch
  shipped code or drain workers.
- ``admin`` may do everything, including cancelling anyone's job and draining workers.

Messages of the worker's session (heartbeat, task_started, task_result, ...) need no check of
their own: the broker only takes them from a connection that registered, which needed the role.
Without CURVE there are no keys and so no roles: the bus is then loopback-only by default and
everyone who reaches it acts as admin (:func:`dtf_bus.security.curve.refuse_if_exposed`).
"""

from __future__ import annotations

from dtf_bus import protocol

WORKER, CLIENT, ADMIN = "worker", "client", "admin"
ROLES = (WORKER, CLIENT, ADMIN)

_CLIENTS = frozenset((CLIENT, ADMIN))
# Message type -> the roles that may send it. Types absent here are the worker session's.
ALLOWED: dict[str, frozenset[str]] = {
    protocol.REGISTER: frozenset((WORKER, ADMIN)),
    protocol.SUBMIT: _CLIENTS,
    protocol.STATUS: _CLIENTS,
    protocol.WAIT: _CLIENTS,
    protocol.RESULTS: _CLIENTS,
    protocol.WORKERS: _CLIENTS,
    protocol.BALANCER_STATS: _CLIENTS,
    protocol.CANCEL_JOB: _CLIENTS,  # and, for a client, only its own jobs (checked by the broker)
    protocol.CLOSE_JOB: _CLIENTS,  # likewise
    protocol.FOLLOW: _CLIENTS,
    protocol.TEST_HISTORY: _CLIENTS,
    protocol.QUERY: _CLIENTS,
    protocol.DRAIN_WORKER: frozenset((ADMIN,)),
    protocol.PING: frozenset(ROLES),
    # Shipped code: clients ask for and upload archives, workers fetch them (by hash only).
    protocol.SHIP_HAVE: _CLIENTS,
    protocol.SHIP_PUT: _CLIENTS,
    protocol.SHIP_GET: frozenset((WORKER, ADMIN)),
}


def refusal(role: str | None, name: str, kind: str) -> str | None:
    """Why the key ``name`` of ``role`` may not send ``kind``, or None if it may."""
    allowed = ALLOWED.get(kind)
    if allowed is None or role in allowed:
        return None
    if role is None:
        return (
            f"{kind}: key {name!r} has no role; authorize it with "
            f"dtf keys authorize KEY DIR --role {'|'.join(sorted(allowed))}"
        )
    return f"{kind}: not allowed for key {name!r} (role {role}; needs {' or '.join(sorted(allowed))})"
