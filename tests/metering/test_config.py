"""Settings: env prefix, signing key sources, placeholder refusal, secrets never shown."""

import logging

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from prover.config import Settings, parse_seed
from prover.errors import ConfigError

SEED_HEX = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("DATABASE_URL", "SIGNING_KEY", "SIGNING_KEY_FILE", "RATE_CARD",
                 "MODEL_ENCODINGS", "BIT_SIZE", "EPOCH_SECONDS"):
        monkeypatch.delenv(f"ZKMETER_{name}", raising=False)


def test_defaults():
    s = Settings()
    assert s.database_url.get_secret_value() == "sqlite:///./zkmeter.sqlite"
    assert s.bit_size == 32 and s.model_encodings == {}


def test_env_and_secrets_hidden(monkeypatch, caplog):
    monkeypatch.setenv("ZKMETER_SIGNING_KEY", SEED_HEX)
    monkeypatch.setenv("ZKMETER_DATABASE_URL", "postgresql+psycopg://u:hunter2@db/zk")
    monkeypatch.setenv("ZKMETER_MODEL_ENCODINGS", '{"custom": "cl100k_base"}')
    monkeypatch.setenv("ZKMETER_BIT_SIZE", "32")
    s = Settings()
    assert s.bit_size == 32 and s.model_encodings == {"custom": "cl100k_base"}
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("settings %s %r", s, s)
    for shown in (repr(s), str(s), s.model_dump_json(), caplog.text):
        assert SEED_HEX not in shown and "hunter2" not in shown
    assert bytes(s.load_signing_key()) == bytes.fromhex(SEED_HEX)


def test_key_file(tmp_path, monkeypatch):
    path = tmp_path / "provider.key"
    path.write_text(SEED_HEX + "\n")
    monkeypatch.setenv("ZKMETER_SIGNING_KEY_FILE", str(path))
    assert bytes(Settings().load_signing_key()) == bytes.fromhex(SEED_HEX)
    path.write_bytes(bytes.fromhex(SEED_HEX))
    assert bytes(Settings().load_signing_key()) == bytes.fromhex(SEED_HEX)
    path.unlink()
    with pytest.raises(ConfigError):
        Settings().load_signing_key()


def test_exactly_one_key_source(tmp_path, monkeypatch):
    with pytest.raises(ConfigError):
        Settings().load_signing_key()
    (tmp_path / "k").write_text(SEED_HEX)
    monkeypatch.setenv("ZKMETER_SIGNING_KEY", SEED_HEX)
    monkeypatch.setenv("ZKMETER_SIGNING_KEY_FILE", str(tmp_path / "k"))
    with pytest.raises(ConfigError):
        Settings().load_signing_key()


@pytest.mark.parametrize("raw", [b"00" * 32, b"ab" * 32, b"0123" * 16, b"changeme",
                                 b"CHANGE-ME-please", b"<placeholder>", b"", b"zz" * 32,
                                 b"1" * 31, bytes(32), b"\x01" * 32])
def test_placeholders_and_garbage_are_refused(raw):
    with pytest.raises(ConfigError) as info:
        parse_seed(raw)
    assert raw.decode("latin-1") not in str(info.value) or not raw


@pytest.mark.parametrize(("name", "value"), [("BIT_SIZE", "12"), ("BIT_SIZE", "8"),
                                             ("BIT_SIZE", "16"), ("BIT_SIZE", "64"),
                                             ("EPOCH_SECONDS", "0"),
                                             ("MODEL_ENCODINGS", '{"m": "r50k_base"}'),
                                             ("MODEL_ENCODINGS", "not json")])
def test_invalid_settings(monkeypatch, name, value):
    monkeypatch.setenv(f"ZKMETER_{name}", value)
    with pytest.raises((ValidationError, SettingsError)):
        Settings()


def test_meter_from_settings(tmp_path, monkeypatch):
    from prover.metering import Meter, UsageRequest
    from tests.accounts import enroll
    monkeypatch.setenv("ZKMETER_SIGNING_KEY", SEED_HEX)
    monkeypatch.setenv("ZKMETER_DATABASE_URL", f"sqlite:///{tmp_path / 'z.sqlite'}")
    monkeypatch.setenv("ZKMETER_MODEL_ENCODINGS", '{"gpt-4o": "cl100k_base"}')
    monkeypatch.setenv("ZKMETER_BIT_SIZE", "32")
    meter = Meter.from_settings(Settings())
    try:
        assert meter.provider_id == bytes(Settings().load_signing_key().verify_key)
        assert meter.bit_size == 32 and meter.counter.encoding_for("gpt-4o") == "cl100k_base"
        enroll(meter.ledger.engine, meter.provider_id, ["alice"])
        receipt = meter.record(UsageRequest("k", "alice", "gpt-4o", input_tokens=1,
                                            output_tokens=1)).receipt
        assert receipt.rate_card_hash == meter.rate_card.hash()
    finally:
        meter.close()
        meter.ledger.dispose()


@pytest.mark.parametrize("value", ["8", "16", "64"])
def test_a_bit_size_the_contract_cannot_check_is_refused_clearly(monkeypatch, value):
    """Only n = 32 settles: the on-chain verifier checks 32-bit proofs only (issue 12)."""
    monkeypatch.setenv("ZKMETER_BIT_SIZE", value)
    with pytest.raises(ValidationError, match="bit_size must be 32"):
        Settings()
