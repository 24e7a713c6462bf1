"""Configuration of the metering service: one pydantic-settings class, env vars ``ZKMETER_*``.

* ``ZKMETER_DATABASE_URL``: SQLAlchemy URL, ``sqlite:///path`` or
  ``postgresql+psycopg://...`` (default ``sqlite:///./zkmeter.sqlite``);
* ``ZKMETER_SIGNING_KEY``: the provider's Ed25519 seed, 64 hex characters;
* ``ZKMETER_SIGNING_KEY_FILE``: a file holding that seed (64 hex characters or 32 raw bytes);
* ``ZKMETER_RATE_CARD``: the rate-card TOML file (default: the packaged example);
* ``ZKMETER_MODEL_ENCODINGS``: JSON object model -> encoding, checked before tiktoken's map;
* ``ZKMETER_BIT_SIZE``: range-proof bit size n; a user's epoch total stays < 2^n. Only 32 is
  accepted: the on-chain verifier checks 32-bit proofs only, and a bundle of another size
  could get an honest provider slashed (docs/security.md);
* ``ZKMETER_EPOCH_SECONDS``: planned length of an epoch window (default 86400);
* ``ZKMETER_COUNT_WORKERS``: processes that tokenize text off the GIL (default 0: in-process);
* ``ZKMETER_INGEST_PROCESS``: ``serve``'s ingest transactions in a child process of each
  serving process, ``true``, ``false`` or ``auto`` (the default: a child where each serving
  process has two cores to itself, docs/operations.md);
* ``ZKMETER_INGEST_WRITERS``: concurrent ingest transactions of one serving process
  (default 1; more needs PostgreSQL and no ingest child);
* ``ZKMETER_CHAIN_ID``, ``ZKMETER_CONTRACT_ADDRESS``: where epochs settle; both are bound
  into every range proof (defaults: 31337 and the zero address, which ``zkmeter serve`` and
  ``zkmeter epoch close`` refuse unless ``--dev``: set both from ``zkmeter chain deploy``);
* ``ZKMETER_OPERATOR_ADDRESS``: the address that registered the provider on-chain; with the
  signing key it makes the provider id, and with a payer and an asset each billing account's
  id (default: the zero address, for a meter that does not settle);
* ``ZKMETER_RPC_URL``: a JSON-RPC URL (http:// or https://) of the chain of
  ``ZKMETER_CONTRACT_ADDRESS``; when set, every billing account is prepaid: usage that its
  unreserved escrow on-chain cannot pay is refused (prover/accounts/chain_escrow.py; an
  account not open on-chain has no escrow), and ``zkmeter epoch close`` refuses an epoch id the
  chain already holds for one of its accounts (a restored database, docs/security.md). Unset
  (the default): no on-chain limits and no such check. It is a
  secret (a hosted node's URL carries its API key): never logged;
* ``ZKMETER_RPC_TIMEOUT_SECONDS``: bound on each call to that node (default 3); a call that
  fails or times out refuses the account's usage with UNAVAILABLE, and for the next second
  every uncached account is refused at once;
* ``ZKMETER_ESCROW_POLL_SECONDS``: how often the meter reads the contract's account events
  (deposits, withdrawals, epochs submitted, finalized, rejected, released) to drop the
  affected accounts' cached escrow (default 2);
* ``ZKMETER_ESCROW_HEADROOM_UNITS``: units of each prepaid account's escrow the meter keeps
  back (never bills), a margin for escrow that changes between two reads (default 0);
* ``ZKMETER_ESCROW_TTL_SECONDS``: how long a read of an account's escrow is reused
  (default 5; contract events drop it earlier);
* ``ZKMETER_MIN_LEAVES``: epochs are padded to at least this many leaves (default 16);
* ``ZKMETER_ALLOW_EMPTY_EPOCHS``: publish an epoch with no usage when asked to close it
  (default false: such a close is refused with FAILED_PRECONDITION / exit 1);
* ``ZKMETER_PROOF_WORKERS``: local proof processes (default: the number of CPUs);
* ``ZKMETER_RAY_ADDRESS``: a Ray cluster to prove on instead (``host:port``). Its nodes see
  the values and blindings of the leaves they prove (docs/security.md);
  ``ZKMETER_RAY_TLS_CERT_FILE``, ``_KEY_FILE``, ``_CA_FILE``: Ray's TLS (all three, passed to
  Ray as ``RAY_USE_TLS`` / ``RAY_TLS_*``); a Ray head off this machine without them is
  refused unless ``ZKMETER_RAY_ALLOW_PLAINTEXT=1``;
* ``ZKMETER_GRPC_BIND`` / ``ZKMETER_HTTP_BIND``: listen addresses (default 127.0.0.1:50051
  and 127.0.0.1:8080);
* ``ZKMETER_PLAINTEXT_OPENING_RETENTION_DAYS``: how long the plaintext opening of a user
  without a registered key (served to an operator key only) is kept after publication;
  then it and its user id are deleted from the database (default 90);
* ``ZKMETER_METRICS_BIND``: the operator's Prometheus listener (``GET /metrics``; default
  127.0.0.1:9464, loopback: keep it off the public network). Never on the public HTTP port;
* ``ZKMETER_API_KEY_HASHES``: the API keys' hashes (``sha256:<hex>``, from ``zkmeter keys
  api-key``), either a JSON object hash -> role (``"gateway"``: record usage, list receipts,
  register new users' keys; ``"operator"``: everything, including closing epochs, plaintext
  openings and key rotation) or, as before, a JSON list (every key in it is a gateway); keys
  themselves are never configured or stored;
* ``ZKMETER_MAX_MESSAGE_BYTES``: largest gRPC request (default 4 MiB; larger is
  RESOURCE_EXHAUSTED);
* ``ZKMETER_TLS_CERT_FILE``, ``ZKMETER_TLS_KEY_FILE``: serve gRPC over TLS;
  ``ZKMETER_TLS_CLIENT_CA_FILE``: and require client certificates signed by this CA (mTLS);
* ``ZKMETER_SHUTDOWN_GRACE_SECONDS``: how long in-flight calls may finish on shutdown;
* ``ZKMETER_DB_CONNECT_TIMEOUT_SECONDS``: PostgreSQL connect timeout (default 5);
* ``ZKMETER_DB_STATEMENT_TIMEOUT_SECONDS``: PostgreSQL ``statement_timeout``, also the
  client-side bound on every round trip (plus a 2 s grace), so a partitioned database fails a
  call instead of hanging it (default 30);
* ``ZKMETER_DB_BUSY_TIMEOUT_SECONDS``: SQLite busy timeout, how long a writer waits for the
  file lock (default 30);
* ``ZKMETER_DB_RETRY_SECONDS``: how long a close or an ingest batch keeps retrying transient
  database errors (a dropped connection, a refused connect, a full disk) with backoff before
  it fails (default 15; 0 = no retries);
* ``ZKMETER_HTTP_HEADER_TIMEOUT_SECONDS``: an HTTP client must send a complete request head
  within this long of connecting (or of the previous response) (default 10);
* ``ZKMETER_HTTP_KEEP_ALIVE_SECONDS``: idle keep-alive HTTP connections close after this
  long (default 5).

docs/operations.md lists every timeout and retry setting.

Exactly one of the two signing-key settings must be given, and a placeholder (all-equal bytes,
too few distinct bytes, words such as "changeme") is refused. Secrets are ``SecretStr``: they
never appear in a repr, a log line or an error message.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nacl.signing import SigningKey
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from prover.errors import ConfigError

if TYPE_CHECKING:
    from prover.epoch.executor import RayTls
from prover.ledger.faults import DbTimeouts
from prover.ratecard import DEFAULT_RATE_CARD
from verifier.bundle import SETTLEMENT_BIT_SIZE
from verifier.tokens import SUPPORTED_ENCODINGS

BIT_SIZES = (8, 16, 32, 64)
ROLE_GATEWAY = "gateway"
ROLE_OPERATOR = "operator"
API_KEY_ROLES = (ROLE_GATEWAY, ROLE_OPERATOR)
_PLACEHOLDER_WORDS = ("changeme", "change-me", "placeholder", "example", "secret", "xxxx",
                      "todo", "dummy", "insecure")
MIN_DISTINCT_SEED_BYTES = 12


class Settings(BaseSettings):
    """All settings of the metering core (module docstring)."""

    model_config = SettingsConfigDict(env_prefix="ZKMETER_", extra="ignore")

    database_url: SecretStr = SecretStr("sqlite:///./zkmeter.sqlite")
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None
    rate_card: Path = DEFAULT_RATE_CARD
    model_encodings: dict[str, str] = Field(default_factory=dict)
    bit_size: int = 32
    epoch_seconds: int = Field(default=86_400, ge=1)
    count_workers: int = Field(default=0, ge=0, le=64)
    ingest_process: bool | Literal["auto"] = "auto"  # prover/api/serve.py: ingest_in_child
    ingest_writers: int = Field(default=1, ge=1, le=8)  # within the engine's 15 connections
    chain_id: int = Field(default=31_337, ge=0, lt=2**256)
    contract_address: str = "0x" + "00" * 20
    operator_address: str = "0x" + "00" * 20
    rpc_url: SecretStr | None = None
    rpc_timeout_seconds: float = Field(default=3.0, gt=0, le=120)
    escrow_poll_seconds: float = Field(default=2.0, gt=0, le=3600)
    escrow_headroom_units: int = Field(default=0, ge=0, lt=2**63)
    escrow_ttl_seconds: float = Field(default=5.0, ge=0)
    min_leaves: int = Field(default=16, ge=1, le=1024)
    allow_empty_epochs: bool = False
    proof_workers: int | None = Field(default=None, ge=1)
    ray_address: str | None = None
    ray_tls_cert_file: Path | None = None
    ray_tls_key_file: Path | None = None
    ray_tls_ca_file: Path | None = None
    ray_allow_plaintext: bool = False
    grpc_bind: str = "127.0.0.1:50051"
    http_bind: str = "127.0.0.1:8080"
    metrics_bind: str = "127.0.0.1:9464"
    plaintext_opening_retention_days: int = Field(default=90, ge=1, le=36_500)
    api_key_hashes: list[str] | dict[str, str] = Field(default_factory=list)
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    db_connect_timeout_seconds: int = Field(default=5, ge=1, le=3600)
    db_statement_timeout_seconds: float = Field(default=30.0, gt=0, le=86_400)
    db_busy_timeout_seconds: float = Field(default=30.0, ge=0, le=86_400)
    db_retry_seconds: float = Field(default=15.0, ge=0, le=86_400)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    http_keep_alive_seconds: int = Field(default=5, ge=1, le=3600)

    def db_timeouts(self) -> "DbTimeouts":
        """The database timeouts and retry bound of these settings."""
        return DbTimeouts(connect_seconds=self.db_connect_timeout_seconds,
                          statement_seconds=self.db_statement_timeout_seconds,
                          busy_seconds=self.db_busy_timeout_seconds,
                          retry_seconds=self.db_retry_seconds)

    @field_validator("api_key_hashes")
    @classmethod
    def _key_hashes(cls, value: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        for item in value:
            digest = item.removeprefix("sha256:")
            if not item.startswith("sha256:") or len(digest) != 64 or not _is_hex(
                    digest.encode("ascii", "replace")):
                raise ValueError("api_key_hashes entries must be 'sha256:' + 64 hex characters")
        if isinstance(value, dict):
            for role in value.values():
                if role not in API_KEY_ROLES:
                    raise ValueError(f"api_key_hashes roles must be one of "
                                     f"{', '.join(API_KEY_ROLES)}")
        return value

    def api_key_roles(self) -> dict[str, str]:
        """Key hash -> role; a key of the old list form is a gateway."""
        if isinstance(self.api_key_hashes, dict):
            return dict(self.api_key_hashes)
        return {digest: ROLE_GATEWAY for digest in self.api_key_hashes}

    @field_validator("ingest_process", mode="before")
    @classmethod
    def _ingest_process(cls, value: object) -> object:
        """``true``, ``false`` or ``auto``, any case (also 1/0, yes/no, on/off)."""
        if not isinstance(value, str):
            return value
        word = value.strip().lower()
        if word == "auto":
            return "auto"
        if word in ("true", "1", "yes", "on"):
            return True
        if word in ("false", "0", "no", "off"):
            return False
        raise ValueError("ingest_process must be true, false or auto")

    @field_validator("rpc_url")
    @classmethod
    def _rpc_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("http://",
                                                                          "https://")):
            raise ValueError("rpc_url must be an http:// or https:// JSON-RPC URL")
        return value

    @field_validator("contract_address", "operator_address")
    @classmethod
    def _address(cls, value: str, info: ValidationInfo) -> str:
        raw = value.removeprefix("0x")
        if len(raw) != 40 or not _is_hex(raw.encode("ascii", "replace")):
            raise ValueError(f"{info.field_name} must be a 20-byte hex address")
        return "0x" + raw.lower()

    def ray_tls(self) -> "RayTls | None":
        """Ray's TLS files, if configured (all three or none)."""
        from prover.epoch.executor import RayTls

        files = (self.ray_tls_cert_file, self.ray_tls_key_file, self.ray_tls_ca_file)
        if all(f is None for f in files):
            return None
        if any(f is None for f in files):
            raise ConfigError("set all of ZKMETER_RAY_TLS_CERT_FILE, ZKMETER_RAY_TLS_KEY_FILE "
                              "and ZKMETER_RAY_TLS_CA_FILE, or none")
        cert, key, ca = (str(f) for f in files)
        return RayTls(cert, key, ca)

    def operator_bytes(self) -> bytes:
        """The operator address as 20 bytes."""
        return bytes.fromhex(self.operator_address[2:])

    def contract_bytes(self) -> bytes:
        """The settlement contract address as 20 bytes."""
        return bytes.fromhex(self.contract_address[2:])

    def settlement_problem(self) -> str | None:
        """Why epochs closed with these settings could never settle, or None: the zero
        contract address, or a chain id left at its default."""
        if self.contract_bytes() == bytes(20):
            return ("ZKMETER_CONTRACT_ADDRESS is not set (the zero address): epochs would be "
                    "bound to no settlement contract and could never settle; run `zkmeter "
                    "chain deploy` and set ZKMETER_CONTRACT_ADDRESS and ZKMETER_CHAIN_ID from "
                    "its output (or pass --dev for a development run)")
        if "chain_id" not in self.model_fields_set:
            return ("ZKMETER_CHAIN_ID is not set: every proof is bound to the chain id; set it "
                    "to the chain the contract was deployed on (`zkmeter chain deploy` prints "
                    "it), or pass --dev for a development run")
        return None

    @field_validator("bit_size")
    @classmethod
    def _bit_size(cls, value: int) -> int:
        if value != SETTLEMENT_BIT_SIZE:
            raise ValueError(f"bit_size must be {SETTLEMENT_BIT_SIZE}: the settlement "
                             f"contract verifies {SETTLEMENT_BIT_SIZE}-bit range proofs only")
        return value

    @field_validator("model_encodings")
    @classmethod
    def _encodings(cls, value: dict[str, str]) -> dict[str, str]:
        for model, name in value.items():
            if not model or name not in SUPPORTED_ENCODINGS:
                raise ValueError(f"model_encodings: {model!r} -> {name!r} is not a supported "
                                 f"encoding ({', '.join(SUPPORTED_ENCODINGS)})")
        return value

    def load_signing_key(self) -> SigningKey:
        """The provider's Ed25519 key from exactly one of the two settings."""
        if (self.signing_key is None) == (self.signing_key_file is None):
            raise ConfigError("set exactly one of ZKMETER_SIGNING_KEY and "
                              "ZKMETER_SIGNING_KEY_FILE")
        if self.signing_key is not None:
            return SigningKey(parse_seed(self.signing_key.get_secret_value().encode("ascii",
                                                                                   "replace")))
        path = self.signing_key_file
        if path is None:  # unreachable: checked above; keeps the type checker honest
            raise ConfigError("ZKMETER_SIGNING_KEY_FILE is not set")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the signing key file {path}: "
                              f"{exc.strerror}") from None
        return SigningKey(parse_seed(raw))


def parse_seed(raw: bytes) -> bytes:
    """A 32-byte Ed25519 seed from 64 hex characters (or 32 raw bytes); refuses placeholders.

    Error messages never repeat the value."""
    text = raw.strip()
    seed: bytes
    if len(raw) == 32 and not _is_hex(raw):
        seed = raw
    elif len(text) == 64 and _is_hex(text):
        seed = bytes.fromhex(text.decode("ascii"))
    else:
        lowered = text.lower()
        if any(word.encode() in lowered for word in _PLACEHOLDER_WORDS):
            raise ConfigError("the signing key is a placeholder; generate a real one")
        raise ConfigError("the signing key must be 64 hex characters (a 32-byte seed)")
    if len(set(seed)) < MIN_DISTINCT_SEED_BYTES:
        raise ConfigError("the signing key looks like a placeholder (too few distinct bytes); "
                          "generate a real one")
    return seed


def _is_hex(data: bytes) -> bool:
    try:
        bytes.fromhex(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return True
