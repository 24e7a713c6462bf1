"""API-key roles (issue 12): a gateway key records usage and registers new users; only an
operator key closes epochs, reads plaintext openings and rotates a user's key. Replacing a
registered key is refused (ALREADY_EXISTS); a rotation counts from the next epoch and is
logged without the key."""

import logging

import grpc
import pytest
from nacl.public import PrivateKey

from prover.api.grpc_server import hash_api_key, new_api_key
from prover.app import build_services
from prover.config import Settings
from tests.accounts import STANDARD_USERS, enroll
from tests.api.grpc_harness import ServerThread
from verifier.opening import unseal
from zkmeter.client import Client

SEED = "b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfef"


@pytest.fixture()
def services(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'zk.sqlite'}", signing_key=SEED,
                        proof_workers=1, contract_address="0x" + "42" * 20)
    services = build_services(settings)
    enroll(services.meter.ledger.engine, services.meter.provider_id,
           [*STANDARD_USERS, "nokey", "user-gateway", "user-operator", "user-legacy"])
    yield services
    services.close()


@pytest.fixture()
def keys():
    return {"gateway": new_api_key(), "operator": new_api_key(), "legacy": new_api_key()}


@pytest.fixture()
def target(services, keys):
    roles = {hash_api_key(keys["gateway"]): "gateway",
             hash_api_key(keys["operator"]): "operator"}
    running = ServerThread(services, api_key_hashes=roles)
    yield running.target
    running.stop()


def usage(zk, key, user):
    return zk.record_usage(idempotency_key=key, user_id=user, model="gpt-4o",
                           input_tokens=5, output_tokens=1)


def code_of(fn, *args):
    with pytest.raises(grpc.RpcError) as info:
        fn(*args)
    return info.value.code()


def test_a_gateway_key_cannot_close_read_plaintext_or_rotate(target, keys):
    with Client(target, api_key=keys["gateway"]) as gw:
        usage(gw, "g1", "nokey")
        gw.register_user_key("alice", bytes(PrivateKey.generate().public_key))
        assert gw.current_epoch().epoch_id == 1
        assert code_of(gw.close_epoch) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(gw.opening, 1, "nokey") == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(gw.rotate_user_key, "alice",
                       bytes(PrivateKey.generate().public_key)) == grpc.StatusCode.PERMISSION_DENIED
    with Client(target, api_key=keys["operator"]) as op:
        assert op.close_epoch().epoch_id == 1
        assert op.opening(1, "nokey")


def test_the_old_list_form_makes_every_key_a_gateway(services, keys):
    running = ServerThread(services, api_key_hashes=[hash_api_key(keys["legacy"])])
    try:
        with Client(running.target, api_key=keys["legacy"]) as zk:
            usage(zk, "l1", "bob")
            assert code_of(zk.close_epoch) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        running.stop()


def test_settings_accept_both_forms_and_refuse_unknown_roles(monkeypatch, keys):
    digest = hash_api_key(keys["gateway"])
    monkeypatch.setenv("ZKMETER_API_KEY_HASHES", f'["{digest}"]')
    assert Settings().api_key_roles() == {digest: "gateway"}
    monkeypatch.setenv("ZKMETER_API_KEY_HASHES", f'{{"{digest}": "operator"}}')
    assert Settings().api_key_roles() == {digest: "operator"}
    monkeypatch.setenv("ZKMETER_API_KEY_HASHES", f'{{"{digest}": "admin"}}')
    with pytest.raises(ValueError, match="roles must be one of"):
        Settings()


def test_replacing_a_registered_key_is_already_exists(target, keys):
    first, second = (bytes(PrivateKey.generate().public_key) for _ in range(2))
    for role in ("gateway", "operator"):
        with Client(target, api_key=keys[role]) as zk:
            zk.register_user_key(f"user-{role}", first)
            zk.register_user_key(f"user-{role}", first)  # the same key again: a no-op
            assert code_of(zk.register_user_key, f"user-{role}",
                           second) == grpc.StatusCode.ALREADY_EXISTS


def test_a_rotation_takes_effect_from_the_next_epoch_and_logs_no_key(target, keys, services,
                                                                      caplog):
    old, new = PrivateKey.generate(), PrivateKey.generate()
    with Client(target, api_key=keys["gateway"]) as gw, \
            Client(target, api_key=keys["operator"]) as op:
        gw.register_user_key("carol", bytes(old.public_key))
        usage(gw, "c1", "carol")  # epoch 1 opens with the old key in force
        with caplog.at_level(logging.INFO):
            effective = op.rotate_user_key("carol", bytes(new.public_key))
        assert effective == 2
        assert bytes(new.public_key).hex() not in caplog.text
        assert "carol" not in caplog.text
        assert "rotated" in caplog.text
        op.close_epoch()
        usage(gw, "c2", "carol")  # epoch 2
        op.close_epoch()
    secret_tag = _tag(services, 1, "carol")
    unseal(services.store.sealed_opening(1, secret_tag), bytes(old))  # epoch 1: old key
    unseal(services.store.sealed_opening(2, _tag(services, 2, "carol")), bytes(new))


def test_rotating_an_unregistered_user_is_not_found(target, keys):
    with Client(target, api_key=keys["operator"]) as op:
        assert code_of(op.rotate_user_key, "nobody",
                       bytes(PrivateKey.generate().public_key)) == grpc.StatusCode.NOT_FOUND


def _tag(services, epoch_id, user):
    from prover.epoch.derive import user_tag
    from prover.epoch.service import master_secret
    secret = master_secret(services.settings.load_signing_key())
    account_id = services.accounts.user_account(user)
    return user_tag(secret, services.epochs.context(epoch_id, account_id), user)
