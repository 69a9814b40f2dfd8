"""The pieces on their own: protocol limits, spec limits, key files, API-key files, KeyGuard.

Pure logic, plus KeyGuard on a real ZeroMQ context (its ZAP thread and key directory are the
real ones; no sockets leave the process).
"""

from __future__ import annotations

import json
import logging
import math
import stat

import msgpack
import pytest
import zmq

from dtf_bus import defaults, logs, protocol, spec
from dtf_bus.security import apikeys, keyfiles, roles
from dtf_bus.security import curve as security

pytestmark = [pytest.mark.unit, pytest.mark.security]


def nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def reason(frame: bytes) -> str:
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.decode(frame)
    return str(exc.value)


def result(**fields: object) -> bytes:
    body = {"task_id": "j.0", "attempt": 1, "outcome": "succeeded", "ended_at": 1.7e9, **fields}
    return result_batch([body])


def result_batch(results: list) -> bytes:
    return protocol.encode(protocol.TASK_RESULT, {"results": results})


def test_decode_refuses_what_could_hurt_the_broker_or_its_store():
    assert "max_ext_len" in reason(msgpack.packb([1, "ping", {"req": msgpack.ExtType(1, b"x")}]))
    assert "exceeds" in reason(b"\x93\x01\xa4ping\xdf\xff\xff\xff\xff")  # a map of 4 billion entries
    assert "not msgpack" in reason(b"\x91" * 5000 + b"\x00")  # msgpack's own stack limit
    limit = defaults.MAX_NESTING_DEPTH
    assert protocol.decode(result(result={"r": nested(limit - 2)}))
    assert "nested deeper than" in reason(result(result={"r": nested(limit)}))
    heartbeat = protocol.encode(protocol.HEARTBEAT, {"metrics": {"m": nested(limit + 5)}})
    assert "heartbeat: field 'metrics' is nested deeper" in reason(heartbeat)
    submit = protocol.encode(protocol.SUBMIT, {"req": 1, "tasks": [{"params": nested(limit + 5)}]})
    assert "submit: field 'tasks' is nested deeper" in reason(submit)
    assert "not a plausible epoch timestamp" in reason(result(ended_at=math.nan))
    assert "not a plausible epoch timestamp" in reason(result(ended_at=math.inf))
    assert "not a plausible epoch timestamp" in reason(result(started_at=-1.0))
    assert "longer than" in reason(result(task_id="x" * (defaults.MAX_ID_CHARS + 1)))
    assert "task_result: results[0]: field 'outcome' is not one of" in reason(result(outcome="exploded"))
    ok = {"task_id": "j.0", "attempt": 1, "outcome": "failed", "ended_at": 1.7e9}
    assert "results[1]: missing field 'outcome'" in reason(result_batch([ok, {"task_id": "j.1", "attempt": 1}]))
    assert "results[1] is not a map" in reason(result_batch([ok, "x"]))
    assert "assign: tasks[0]: missing field 'plugin'" in reason(
        protocol.encode(protocol.ASSIGN, {"tasks": [{"task_id": "j.0", "attempt": 1, "params": {}}]})
    )
    register = {"worker_id": "w", "capabilities": {}, "plugins": []}
    assert "must be 1.." in reason(protocol.encode(protocol.REGISTER, {**register, "slots": 2**40}))
    status = protocol.encode(protocol.STATUS, {"req": 1, "job_id": "j" * 1000})
    assert "status: field 'job_id' is longer than" in reason(status)


def test_a_bool_req_is_never_echoed_back():
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.decode(msgpack.packb([2, "ping", {"req": True}]))
    assert exc.value.req is None
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.decode(msgpack.packb([2, "ping", {"req": 41}]))
    assert exc.value.req == 41


def test_repeat_cannot_expand_into_a_memory_bomb():
    task = {"name": "t", "plugin": "sim", "repeat": defaults.MAX_TASKS_PER_JOB}
    with pytest.raises(spec.SpecError, match="repeats included"):
        spec.validate([{**task, "name": f"t{i}"} for i in range(50)])  # refused before expanding anything
    assert len(spec.validate([task])) == defaults.MAX_TASKS_PER_JOB


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.0.0.2:5555", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/dtf.sock", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://10.1.2.3:5555", False),
        ("http://[::]:8585", False),
    ],
)
def test_loopback(endpoint, local):
    assert security.is_loopback(endpoint) is local


def test_exposed_plaintext_is_reported_loudly(caplog):
    with caplog.at_level(logging.WARNING, logger="dtf.security"):
        security.warn_if_exposed(["tcp://127.0.0.1:5555", "tcp://0.0.0.0:5556"])
    assert len(caplog.records) == 1 and "SECURITY" in caplog.text and "0.0.0.0:5556" in caplog.text


def test_key_files(tmp_path):
    public, secret = keyfiles.generate(tmp_path, "node")
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    keypair = keyfiles.load_keypair(secret)
    assert keyfiles.load_public(public) == keypair.public
    with pytest.raises(security.SecurityError, match="already exists"):
        keyfiles.generate(tmp_path, "node")
    with pytest.raises(security.SecurityError, match="holds no secret key"):
        keyfiles.load_keypair(public)
    with pytest.raises(security.SecurityError, match="key file not found"):
        keyfiles.load_public(tmp_path / "missing.key")
    (tmp_path / "bad.key").write_text('curve\n    public-key = "short"\n')
    with pytest.raises(security.SecurityError, match="40-character"):
        keyfiles.load_public(tmp_path / "bad.key")
    assert security.client_curve(None, None) is None
    with pytest.raises(security.SecurityError, match="needs --broker-key"):
        security.client_curve(secret, None)


def test_client_keys_resolve_flags_then_environment(tmp_path, monkeypatch):
    _, secret = keyfiles.generate(tmp_path, "c")
    broker, _ = keyfiles.generate(tmp_path, "b")
    monkeypatch.delenv(defaults.CURVE_SECRET_ENV, raising=False)
    monkeypatch.delenv(defaults.BROKER_KEY_ENV, raising=False)
    assert security.resolve_client_curve() is None
    monkeypatch.setenv(defaults.CURVE_SECRET_ENV, str(secret))
    monkeypatch.setenv(defaults.BROKER_KEY_ENV, str(broker))
    from_env = security.resolve_client_curve()
    assert from_env is not None and from_env.server_public == keyfiles.load_public(broker)
    other, _ = keyfiles.generate(tmp_path, "other")  # a config file's key reaches here through config.merge
    from_flag = security.resolve_client_curve(broker_key=str(other))
    assert from_flag.server_public == keyfiles.load_public(other)
    assert from_flag.keypair == from_env.keypair  # the secret still from the environment


def test_api_key_file(tmp_path):
    path = tmp_path / "keys.json"
    read, record = apikeys.create(path, "read", "dash")
    admin, _ = apikeys.create(path, "admin")
    assert read.startswith(f"dtf_{record['id']}_") and read not in path.read_text()
    keys = apikeys.ApiKeys(path)
    assert keys.check(read, "read") is None and keys.check(admin, "admin") is None
    assert keys.check(read, "admin")[0] == 403
    assert keys.check(None, "read")[0] == 401 and keys.check("dtf_x_y", "read")[0] == 401
    assert apikeys.revoke(path, record["id"]) and keys.check(read, "read")[0] == 401  # re-read on change
    path.write_text("{not json")
    assert keys.check(admin, "admin") is None  # a broken file keeps the keys we had
    with pytest.raises(apikeys.ApiKeyError, match="role must be one of"):
        apikeys.create(tmp_path / "k2.json", "root")
    with pytest.raises(apikeys.ApiKeyError, match="not found"):
        apikeys.ApiKeys(tmp_path / "absent.json")
    headers = {"Authorization": "Bearer abc"}
    assert apikeys.presented_key(headers) == "abc"
    assert apikeys.presented_key({"X-API-Key": "def"}) == "def"
    assert apikeys.presented_key({}, "ghi") == "ghi" and apikeys.presented_key({}) is None


@pytest.fixture
def guard(tmp_path):
    _, secret = keyfiles.generate(tmp_path / "keys", "broker")
    authorized = tmp_path / "authorized"
    for name, role in (("a", "worker"), ("b", "client")):
        public, _ = keyfiles.generate(tmp_path / "keys", name)
        keyfiles.authorize(public, authorized, role)
    ctx = zmq.Context()
    guard = security.KeyGuard(ctx, secret, authorized)
    yield guard, tmp_path
    guard.close()
    ctx.term()


def test_guard_binds_ids_to_keys_and_revokes(guard):
    guard, tmp_path = guard
    key_a = keyfiles.load_public(tmp_path / "keys" / "a.key").decode()
    key_b = keyfiles.load_public(tmp_path / "keys" / "b.key").decode()
    assert guard.authorized == {key_a, key_b}
    assert guard.identity(key_a) == ("a", "worker") and guard.identity(key_b) == ("b", "client")
    assert guard.identity(guard.keypair.public.decode()) == ("broker", "admin")
    assert guard.bind("w1", key_a) is None and guard.bind("w1", key_a) is None
    assert "belongs to another key" in guard.bind("w1", key_b)
    assert guard.bind("w2", None) == "this connection has no CURVE key"
    assert guard.release("w1") and not guard.release("w1")
    assert guard.bind("w1", key_b) is None  # released: free for another key
    assert guard.reload_if_changed() is None  # nothing changed
    (tmp_path / "authorized" / "b.key").unlink()
    assert guard.reload_if_changed() == ["w1"]
    assert guard.revoked == {key_b} and guard.key_of("w1") is None
    guard.request_reload()  # SIGHUP: reloads with no change on disk, revokes nothing new
    assert guard.reload_if_changed() is None and guard.revoked == {key_b}
    (tmp_path / "authorized" / "junk.key").write_text("not a certificate")
    assert guard.reload_if_changed() is None and guard.authorized == {key_a}  # broken: kept


def test_guard_needs_both_halves(tmp_path):
    _, secret = keyfiles.generate(tmp_path, "broker")
    with pytest.raises(security.SecurityError, match="needs --authorized-keys"):
        security.KeyGuard(zmq.Context.instance(), secret, None)
    with pytest.raises(security.SecurityError, match="authorized-keys directory not found"):
        security.KeyGuard(zmq.Context.instance(), secret, tmp_path / "nope")


def test_keys_cli(tmp_path, capsys):
    from dtf_bus.cli import main as cli

    assert cli.main(["keys", "generate", str(tmp_path), "--name", "n1"]) == 0
    assert (tmp_path / "n1.key").exists() and (tmp_path / "n1.key_secret").exists()
    assert cli.main(["keys", "generate", str(tmp_path), "--name", "n1"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert cli.main(["keys", "authorize", str(tmp_path / "n1.key"), str(tmp_path / "auth"), "--role", "worker"]) == 0
    assert keyfiles.role_in(tmp_path / "auth" / "n1.key") == "worker"
    assert keyfiles.load_public(tmp_path / "auth" / "n1.key") == keyfiles.load_public(tmp_path / "n1.key")
    capsys.readouterr()
    keys_file = tmp_path / "api.json"
    assert cli.main(["keys", "api-key", "create", "--role", "admin", "--file", str(keys_file)]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("dtf_") and key not in keys_file.read_text()
    assert cli.main(["keys", "api-key", "list", "--json", "--file", str(keys_file)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["role"] == "admin"


def test_new_key_is_admitted_with_its_role_at_first_sight(guard):
    """A key authorized after the guard's last look is found (and its role known) on first use."""
    guard, tmp_path = guard
    public, _ = keyfiles.generate(tmp_path / "keys", "late")
    keyfiles.authorize(public, tmp_path / "authorized", "admin")
    assert guard.identity(keyfiles.load_public(public).decode()) == ("late", "admin")


def test_roleless_key_is_admitted_but_allowed_nothing(guard, caplog):
    guard, tmp_path = guard
    public, _ = keyfiles.generate(tmp_path / "keys", "old")
    (tmp_path / "authorized" / "old.key").write_text(public.read_text().replace("role = ", "x = "))
    key = keyfiles.load_public(public).decode()
    assert guard.identity(key) == ("old", None)
    assert "has no role" in roles.refusal(None, "old", "submit")
    assert "without a role" in caplog.text


def test_roles_table():
    assert (
        roles.refusal("worker", "w", "submit") == "submit: not allowed for key 'w' (role worker; needs admin or client)"
    )
    assert roles.refusal("client", "c", "register").startswith("register: not allowed for key 'c' (role client")
    assert roles.refusal("client", "c", "drain_worker") is not None
    assert roles.refusal("worker", "w", "register") is None and roles.refusal("worker", "w", "ping") is None
    assert roles.refusal("client", "c", "cancel_job") is None and roles.refusal("admin", "a", "drain_worker") is None
    assert roles.refusal("client", "c", "heartbeat") is None  # the worker session: gated by registration


def test_key_files_private_from_the_first_byte(tmp_path):
    public, secret = keyfiles.generate(tmp_path / "new", "n")
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and stat.S_IMODE(public.stat().st_mode) == 0o644
    assert keyfiles.load_keypair(secret).public == keyfiles.load_public(public)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(security.SecurityError, match="writable by group or others"):
        keyfiles.generate(shared, "n")
    with pytest.raises(security.SecurityError, match="writable by group or others"):
        keyfiles.authorize(public, shared, "worker")


def test_guard_refuses_a_writable_authorized_keys_dir(tmp_path):
    _, secret = keyfiles.generate(tmp_path / "keys", "broker")
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    with pytest.raises(security.SecurityError, match="writable by group or others"):
        security.KeyGuard(zmq.Context.instance(), secret, loose)


def test_bus_refuses_non_loopback_without_curve_unless_insecure(caplog):
    security.refuse_if_exposed(["tcp://127.0.0.1:5555", "ipc:///tmp/x"], insecure=False)
    with pytest.raises(security.SecurityError, match=r"refusing to listen on tcp://0\.0\.0\.0:5555 without CURVE"):
        security.refuse_if_exposed(["tcp://0.0.0.0:5555"], insecure=False)
    security.refuse_if_exposed(["tcp://0.0.0.0:5555"], insecure=True)
    assert "can run commands on every worker" in caplog.text


def test_refusal_log_budget_covers_fresh_subjects(caplog):
    limited = logs.RateLimited(logging.getLogger("dtf.security"), interval=60, budget=3)
    for i in range(50):
        limited(f"key-{i}", "refused %s", i)
    assert caplog.text.count("refused") == 3
