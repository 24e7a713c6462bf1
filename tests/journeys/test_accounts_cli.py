"""The operator's account journey without code (`zkmeter accounts`): register the account a
payer opened on-chain, put users under it, meter them, close the epoch, show and close the
account; every refusal is one line with the right exit code and stores nothing."""

import json

import pytest
from nacl.public import PrivateKey

from prover.app import build_services
from prover.config import Settings
from prover.metering import UsageRequest
from tests.journeys.test_operator_startup import env as operator_env  # noqa: F401 (a fixture)
from tests.journeys.test_operator_startup import invoke, one_line
from verifier.account import AccountBlock
from verifier.statement import unseal_statement

pytestmark = pytest.mark.usefixtures("operator_env")  # a clean operator environment
PAYER = "0x" + "a1" * 20
TOKEN = "0x" + "7e" * 20


def test_register_add_users_meter_close_and_show():
    payer_key = PrivateKey.generate()
    code, out, err = invoke("accounts", "register", "--payer", PAYER, "--asset", TOKEN,
                            "--payer-key", bytes(payer_key.public_key).hex(), "--json")
    assert code == 0, err
    account = json.loads(out)
    settings = Settings()
    expected = AccountBlock(operator=settings.operator_bytes(), payer=bytes.fromhex("a1" * 20),
                            asset=bytes.fromhex("7e" * 20)).account_id(
        bytes(settings.load_signing_key().verify_key))
    assert account["account_id"] == "0x" + expected.hex() and account["asset"] == TOKEN
    for user in ("ann", "ben"):
        code, _, err = invoke("accounts", "add-user", user, "--account-id",
                              account["account_id"],
                              "--user-key", bytes(PrivateKey.generate().public_key).hex())
        assert code == 0, err
    services = build_services(settings)
    try:
        for i, user in enumerate(["ann", "ben", "ann"]):
            services.meter.record(UsageRequest(idempotency_key=f"k{i}", user_id=user,
                                               model="gpt-4o", input_tokens=9, output_tokens=i))
    finally:
        services.close()
    code, out, err = invoke("epoch", "close", "--json")
    assert code == 0, err
    closed = json.loads(out)
    assert [a["account_id"] for a in closed["accounts"]] == [account["account_id"]]
    services = build_services(settings)
    try:
        sealed = services.store.statement(closed["epoch_id"], expected)
        statement = unseal_statement(sealed, bytes(payer_key))
        assert statement.total == closed["total_units"]
    finally:
        services.close()
    code, out, _ = invoke("accounts", "show", "--account-id", account["account_id"], "--json")
    assert code == 0 and json.loads(out)["users"] == ["ann", "ben"]
    code, out, _ = invoke("accounts", "close", "--account-id", account["account_id"], "--json")
    assert code == 0 and json.loads(out)["status"] == "closed"
    code, _, err = invoke("accounts", "add-user", "cat", "--account-id", account["account_id"])
    assert code == 1 and "closed" in one_line(err)


def test_refusals_are_one_line_and_store_nothing():
    code, _, err = invoke("accounts", "register", "--payer", "0x1234", "--payer-key", "00" * 32)
    assert code == 2 and "payer must be 20 bytes" in one_line(err)
    code, _, err = invoke("accounts", "register", "--payer", PAYER, "--payer-key", "zz")
    assert code == 2 and "payer key is not hex" in one_line(err)
    code, _, err = invoke("accounts", "add-user", "ann", "--account-id", "0x" + "11" * 32)
    assert code == 1 and "no billing account" in one_line(err)
    code, _, err = invoke("accounts", "show", "--account-id", "0x" + "11" * 32)
    assert code == 1 and "no billing account" in one_line(err)
    services = build_services(Settings())
    try:
        assert services.accounts.accounts() == {}
        assert services.accounts.user_account("ann") is None
    finally:
        services.close()
