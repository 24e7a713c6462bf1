"""The rate card: integer prices, in billable units per token, per model and token class.

File format (TOML, parsed with tomllib; docs/metering.md)::

    version = 3                 # integer >= 1; raise it on every change
    unit = "micro-USD"          # what one billable unit is (a label, part of the hash)

    [models."gpt-4o"]           # exact model name
    input = 250                 # per input token not served from cache
    cached_input = 125          # per input token served from cache (a part of input)
    output = 1000               # per visible output token
    reasoning = 1000            # per hidden reasoning token (not part of output)

    [models."gpt-4o-*"]         # a trailing * is a prefix entry; the longest prefix wins

Units of one event (integers only, no rounding anywhere)::

    units = (input - cached) * p_input + cached * p_cached + output * p_output
            + reasoning * p_reasoning

Canonical hash (what receipts and bundles carry; independent of the file's formatting)::

    keccak256("ZKMETER_RATECRD1" ‖ u32 version ‖ u16 len ‖ unit ‖ u32 model_count
              ‖ per model, in ascending UTF-8 byte order of the name:
                u16 len ‖ name ‖ u64 input ‖ u64 cached_input ‖ u64 output ‖ u64 reasoning)
"""

import struct
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuits.hashing import keccak256
from prover.errors import InvalidRequestError, RateCardError, UnpricedModelError

RATE_CARD_DOMAIN = b"ZKMETER_RATECRD1"
PRICE_CLASSES: tuple[str, ...] = ("input", "cached_input", "output", "reasoning")
MAX_PRICE = (1 << 32) - 1
MAX_NAME_BYTES = 256
DEFAULT_RATE_CARD = Path(__file__).resolve().parent / "ratecards" / "default.toml"


@dataclass(frozen=True, slots=True)
class Prices:
    """Billable units per token of each class."""

    input: int
    cached_input: int
    output: int
    reasoning: int

    def units(self, *, input_tokens: int, cached_input_tokens: int, output_tokens: int,
              reasoning_tokens: int) -> int:
        """Billable units of one event; cached input is the part of input served from cache."""
        if cached_input_tokens > input_tokens:
            raise InvalidRequestError("cached input tokens exceed input tokens")
        return ((input_tokens - cached_input_tokens) * self.input
                + cached_input_tokens * self.cached_input
                + output_tokens * self.output + reasoning_tokens * self.reasoning)


@dataclass(frozen=True, slots=True)
class RateCard:
    """A parsed, validated rate card."""

    version: int
    unit: str
    models: Mapping[str, Prices]

    def canonical_bytes(self) -> bytes:
        """The byte string hashed into every receipt (module docstring)."""
        unit = self.unit.encode("utf-8")
        parts = [RATE_CARD_DOMAIN, struct.pack(">IH", self.version, len(unit)), unit,
                 struct.pack(">I", len(self.models))]
        for name in sorted(self.models, key=lambda n: n.encode("utf-8")):
            raw = name.encode("utf-8")
            p = self.models[name]
            parts += [struct.pack(">H", len(raw)), raw,
                      struct.pack(">QQQQ", p.input, p.cached_input, p.output, p.reasoning)]
        return b"".join(parts)

    def hash(self) -> bytes:
        """keccak256 of the canonical bytes."""
        return keccak256(self.canonical_bytes())

    def prices_for(self, model: str) -> Prices:
        """The prices of ``model``: an exact entry, else the longest matching prefix entry."""
        exact = self.models.get(model)
        if exact is not None:
            return exact
        best: str | None = None
        for name in self.models:
            if name.endswith("*") and model.startswith(name[:-1]) and (
                    best is None or len(name) > len(best)):
                best = name
        if best is None:
            raise UnpricedModelError(f"rate card v{self.version} has no price for model "
                                     f"{model!r}")
        return self.models[best]


def _price(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_PRICE:
        raise RateCardError(f"{where}: a price is an integer in [0, 2^32)")
    return value


def parse_rate_card(data: Mapping[str, Any]) -> RateCard:
    """Validate a rate card's parsed TOML table (strict: unknown keys are errors)."""
    unknown = set(data) - {"version", "unit", "models"}
    if unknown:
        raise RateCardError(f"unknown top-level keys: {', '.join(sorted(unknown))}")
    version = data.get("version")
    if type(version) is not int or not 1 <= version < 1 << 32:
        raise RateCardError("version must be an integer >= 1")
    unit = data.get("unit")
    if not isinstance(unit, str) or not 1 <= len(unit.encode("utf-8")) <= MAX_NAME_BYTES:
        raise RateCardError("unit must be a non-empty string")
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise RateCardError("a rate card prices at least one model ([models.\"name\"])")
    parsed: dict[str, Prices] = {}
    for name, table in models.items():
        if not name or len(name.encode("utf-8")) > MAX_NAME_BYTES or "*" in name[:-1] \
                or name == "*":
            raise RateCardError(f"model name {name!r}: 1..{MAX_NAME_BYTES} bytes, '*' only "
                                "as the last character of a prefix entry")
        if not isinstance(table, dict):
            raise RateCardError(f"models.{name!r} must be a table")
        if set(table) != set(PRICE_CLASSES):
            raise RateCardError(f"models.{name!r} must set exactly {', '.join(PRICE_CLASSES)}")
        parsed[name] = Prices(**{k: _price(table[k], f"models.{name!r}.{k}")
                                 for k in PRICE_CLASSES})
    return RateCard(version=version, unit=unit, models=parsed)


def loads_rate_card(text: str) -> RateCard:
    """Parse rate-card TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RateCardError(f"rate card is not valid TOML: {exc}") from None
    return parse_rate_card(data)


def load_rate_card(path: str | Path = DEFAULT_RATE_CARD) -> RateCard:
    """Read and parse a rate-card file."""
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RateCardError(f"cannot read rate card {path}: {exc}") from None
    return loads_rate_card(text)
