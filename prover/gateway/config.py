"""Configuration of ``zkmeter gateway``: one pydantic-settings class, env ``ZKMETER_GATEWAY_*``.

* ``ZKMETER_GATEWAY_UPSTREAM_URL``: the OpenAI-compatible backend, e.g.
  ``http://127.0.0.1:8001/v1`` (``zkmeter gateway --upstream URL`` sets it);
* ``ZKMETER_GATEWAY_UPSTREAM_API_KEY``: the provider's key for that backend (sent as
  ``Authorization: Bearer``; the caller's key is never forwarded);
* ``ZKMETER_GATEWAY_BIND``: where the gateway listens (default ``127.0.0.1:8000``);
* ``ZKMETER_GATEWAY_CALLER_KEYS``: JSON object ``{"sha256:<hex>": "<user id>"}`` mapping the
  hashes of callers' API keys (``zkmeter keys caller-key USER``) to zkmeter user ids, or
  ``ZKMETER_GATEWAY_CALLER_KEYS_FILE``: a file holding that JSON;
* ``ZKMETER_GATEWAY_ZKMETER_TARGET``: the gRPC address of ``zkmeter serve`` (default
  ``127.0.0.1:50051``) and ``ZKMETER_GATEWAY_ZKMETER_API_KEY``: the gateway's key there;
* ``ZKMETER_GATEWAY_QUEUE_PATH``: the SQLite file of the durable report queue and of the
  receipts kept for ``GET /v1/zkmeter/receipts/{id}`` (default ``./zkmeter-gateway.sqlite``);
  ``ZKMETER_GATEWAY_QUEUE_MAX``: reports that may wait before new requests are refused with
  503 (default 10000); ``ZKMETER_GATEWAY_QUEUE_SYNCHRONOUS``: ``NORMAL`` (survives a crash of
  the gateway process, the default) or ``FULL`` (also a power loss; one fsync per request);
* ``ZKMETER_GATEWAY_RECEIPTS``: ``inline`` (report before the reply's headers of a
  non-streamed request, so the receipt rides in the ``zkmeter-receipt`` header; the default)
  or ``deferred`` (reply first, report afterwards; fetch the receipt by request id);
* ``ZKMETER_GATEWAY_REPORT_TIMEOUT_SECONDS`` (default 2), ``ZKMETER_GATEWAY_RETRY_SECONDS``
  (first retry delay, doubling to 5 s; default 0.5), ``ZKMETER_GATEWAY_UPSTREAM_TIMEOUT_SECONDS``
  (default 600);
* ``ZKMETER_GATEWAY_METRICS_BIND``: a separate listener for Prometheus metrics (off by
  default; never on the public port);
* ``ZKMETER_GATEWAY_MODEL_ENCODINGS``: JSON model -> encoding, the same map as the server's
  ``ZKMETER_MODEL_ENCODINGS`` (the gateway counts locally only for its fallback path).

Secrets are ``SecretStr``: never in a repr, a log line or an error message.
"""

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from prover.errors import ConfigError
from verifier.tokens import SUPPORTED_ENCODINGS


class GatewaySettings(BaseSettings):
    """All settings of the gateway (module docstring)."""

    model_config = SettingsConfigDict(env_prefix="ZKMETER_GATEWAY_", extra="ignore")

    upstream_url: str = ""
    upstream_api_key: SecretStr | None = None
    bind: str = "127.0.0.1:8000"
    caller_keys: dict[str, str] = Field(default_factory=dict)
    caller_keys_file: Path | None = None
    zkmeter_target: str = "127.0.0.1:50051"
    zkmeter_api_key: SecretStr | None = None
    queue_path: Path = Path("zkmeter-gateway.sqlite")
    queue_max: int = Field(default=10_000, ge=1, le=10_000_000)
    queue_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    receipts: Literal["inline", "deferred"] = "inline"
    report_timeout_seconds: float = Field(default=2.0, gt=0, le=300)
    retry_seconds: float = Field(default=0.5, gt=0, le=60)
    upstream_timeout_seconds: float = Field(default=600.0, gt=0)
    metrics_bind: str | None = None
    model_encodings: dict[str, str] = Field(default_factory=dict)

    @field_validator("upstream_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("upstream_url must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("caller_keys")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        return check_caller_keys(value)

    @field_validator("model_encodings")
    @classmethod
    def _encodings(cls, value: dict[str, str]) -> dict[str, str]:
        for model, name in value.items():
            if not model or name not in SUPPORTED_ENCODINGS:
                raise ValueError(f"model_encodings: {model!r} -> {name!r} is not a supported "
                                 f"encoding ({', '.join(SUPPORTED_ENCODINGS)})")
        return value

    def checked(self) -> "GatewaySettings":
        """Raise ConfigError unless the gateway can run with these settings."""
        if not self.upstream_url:
            raise ConfigError("no upstream: pass --upstream URL or set "
                              "ZKMETER_GATEWAY_UPSTREAM_URL")
        if self.zkmeter_api_key is None or not self.zkmeter_api_key.get_secret_value():
            raise ConfigError("set ZKMETER_GATEWAY_ZKMETER_API_KEY (the gateway's key for "
                              "zkmeter serve, from `zkmeter keys api-key`)")
        if not self.all_caller_keys():
            raise ConfigError("no caller keys: set ZKMETER_GATEWAY_CALLER_KEYS or "
                              "ZKMETER_GATEWAY_CALLER_KEYS_FILE (`zkmeter keys caller-key`)")
        return self

    def all_caller_keys(self) -> dict[str, str]:
        """Key hash -> user id, from the setting and the file (the file's entries win)."""
        keys = dict(self.caller_keys)
        if self.caller_keys_file is not None:
            try:
                loaded = json.loads(self.caller_keys_file.read_text("utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read the caller keys file "
                                  f"{self.caller_keys_file}: {type(exc).__name__}") from None
            if not isinstance(loaded, dict):
                raise ConfigError("the caller keys file must hold a JSON object")
            try:
                keys.update(check_caller_keys(loaded))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return keys


def check_caller_keys(value: dict[str, str]) -> dict[str, str]:
    """Every entry is ``sha256:<64 hex>`` -> a non-empty user id of at most 256 bytes."""
    for digest, user in value.items():
        raw = digest.removeprefix("sha256:") if isinstance(digest, str) else ""
        if (not digest.startswith("sha256:") or len(raw) != 64
                or any(c not in "0123456789abcdef" for c in raw)):
            raise ValueError("caller key entries must be 'sha256:' + 64 lowercase hex "
                             "characters (the hash, never the key)")
        if not isinstance(user, str) or not user or len(user.encode("utf-8")) > 256:
            raise ValueError("each caller key maps to a user id of 1..256 bytes")
    return value
