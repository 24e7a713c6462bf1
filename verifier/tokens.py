"""Offline token counting with tiktoken, the same on the provider's meter and the user's recount.

Encodings. ``tiktoken.get_encoding`` downloads its BPE files at first use; zkmeter never calls
it. The rank files ship in ``verifier/encodings/`` (byte-identical to OpenAI's, see the README
there) and are loaded through tiktoken's own loader with tiktoken's own sha256 pin, by running
tiktoken's constructor functions (``tiktoken_ext.openai_public``) with their loader pointed at
the shipped files, so the split pattern and special tokens are tiktoken's, not a copy. Any
other blob (gpt2, r50k, p50k) is refused, never fetched.

Model -> encoding: an operator's override map first (exact names), then tiktoken's own maps
(``MODEL_TO_ENCODING`` exact, then ``MODEL_PREFIX_TO_ENCODING`` prefixes). A model none of them
knows is an :class:`UnknownModelError`, never a guess.

Counting (OpenAI's documented chat accounting, the cookbook's ``num_tokens_from_messages`` for
current models)::

    prompt     = sum over messages of (3 + |role| + |content| + (|name| + 1 if name)) + 3
    completion = |completion text|

where ``|s|`` is the number of tokens of ``s`` encoded as ordinary text: a special-token string
such as ``<|endoftext|>`` inside user text is counted as the text it is, never as the special
token (and never raises). Hidden counts (reasoning, cached input) cannot be recounted by anyone
and are never derived here: they travel as reported numbers on their own fields.
"""

import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken
import tiktoken.load
import tiktoken.model
import tiktoken_ext.openai_public as _openai_public

ENCODINGS_DIR = Path(__file__).resolve().parent / "encodings"
_OPENAI_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"

# Shipped rank files: name -> sha256, equal to tiktoken 0.14.0's own expected_hash pins.
SHIPPED_ENCODINGS: Mapping[str, str] = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
# Encodings zkmeter can build offline (o200k_harmony = o200k_base's ranks + its special tokens).
SUPPORTED_ENCODINGS: tuple[str, ...] = ("cl100k_base", "o200k_base", "o200k_harmony")

# OpenAI's chat accounting for current models (gpt-3.5-turbo-0613 and later, gpt-4*, gpt-4o*).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3


class TokenCountError(ValueError):
    """Base class of every error of the token-counting layer."""


class UnknownModelError(TokenCountError):
    """Neither the operator's override map nor tiktoken's model maps know this model."""


class UnsupportedEncodingError(TokenCountError):
    """The encoding exists in tiktoken but zkmeter does not ship it (or it is not an encoding)."""


class EncodingFileError(TokenCountError):
    """A shipped rank file is missing, or its sha256 is not the one tiktoken pins."""


class MessageFormatError(TokenCountError):
    """A chat message or text is not of the expected types (role/content/name strings)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message. Its repr never shows the content or the name."""

    role: str
    content: str
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.role, str) or not self.role:
            raise MessageFormatError("message role must be a non-empty string")
        if not isinstance(self.content, str):
            raise MessageFormatError("message content must be a string")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise MessageFormatError("message name must be a non-empty string when given")

    def __repr__(self) -> str:
        return f"Message(role={self.role!r}, content=<{len(self.content)} chars>, " \
               f"name={'<set>' if self.name is not None else None})"

    __str__ = __repr__


# --- loading -------------------------------------------------------------------------------

_LOCK = threading.RLock()
_ENCODINGS: dict[str, tiktoken.Encoding] = {}
_RANKS: dict[str, dict[bytes, int]] = {}
_real_load_tiktoken_bpe = tiktoken.load.load_tiktoken_bpe


def _shipped_loader(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Stand-in for tiktoken's loader: serve a shipped file, refuse anything else."""
    name = blobpath.removeprefix(_OPENAI_BLOB).removesuffix(".tiktoken")
    pinned = SHIPPED_ENCODINGS.get(name)
    if pinned is None or blobpath != f"{_OPENAI_BLOB}{name}.tiktoken":
        raise UnsupportedEncodingError(f"refusing to fetch {blobpath}: not shipped with zkmeter")
    if expected_hash != pinned:
        raise EncodingFileError(f"tiktoken pins {name} to sha256 {expected_hash}, "
                                f"zkmeter ships {pinned}")
    if name not in _RANKS:
        path = ENCODINGS_DIR / f"{name}.tiktoken"
        if not path.is_file():
            raise EncodingFileError(f"shipped encoding file {path} is missing")
        # tiktoken skips its hash check when its cache is disabled (TIKTOKEN_CACHE_DIR=""),
        # so check the pin here too, then let tiktoken check and parse it.
        if hashlib.sha256(path.read_bytes()).hexdigest() != pinned:
            raise EncodingFileError(f"{path}: sha256 is not tiktoken's pin for {name}")
        try:
            _RANKS[name] = _real_load_tiktoken_bpe(str(path), expected_hash=expected_hash)
        except ValueError as exc:  # tiktoken's hash mismatch or a corrupt line
            raise EncodingFileError(f"{path}: {exc}") from None
        except OSError as exc:  # tiktoken copies the file into TIKTOKEN_CACHE_DIR if set
            raise EncodingFileError(f"tiktoken could not cache {name}: {exc.strerror} "
                                    "(check TIKTOKEN_CACHE_DIR)") from None
    return _RANKS[name]


def _refuse_data_gym(*_args: Any, **_kwargs: Any) -> dict[bytes, int]:
    raise UnsupportedEncodingError("refusing to fetch gpt2 data-gym files: not shipped")


@contextmanager
def _offline_constructors() -> Iterator[None]:
    """Point tiktoken's constructor functions at the shipped files (caller holds _LOCK)."""
    saved = (_openai_public.load_tiktoken_bpe, _openai_public.data_gym_to_mergeable_bpe_ranks)
    _openai_public.load_tiktoken_bpe = _shipped_loader
    _openai_public.data_gym_to_mergeable_bpe_ranks = _refuse_data_gym
    try:
        yield
    finally:
        _openai_public.load_tiktoken_bpe, _openai_public.data_gym_to_mergeable_bpe_ranks = saved


def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken Encoding ``name``, built offline from the shipped files (cached)."""
    cached = _ENCODINGS.get(name)
    if cached is not None:
        return cached
    if name not in SUPPORTED_ENCODINGS:
        raise UnsupportedEncodingError(
            f"encoding {name!r} is not supported offline (supported: "
            f"{', '.join(SUPPORTED_ENCODINGS)})")
    constructor: Callable[[], dict[str, Any]] = _openai_public.ENCODING_CONSTRUCTORS[name]
    with _LOCK:
        if name not in _ENCODINGS:
            with _offline_constructors():
                spec = constructor()
            _ENCODINGS[name] = tiktoken.Encoding(
                spec["name"], pat_str=spec["pat_str"], mergeable_ranks=spec["mergeable_ranks"],
                special_tokens=spec["special_tokens"],
                explicit_n_vocab=spec.get("explicit_n_vocab"),
            )
    return _ENCODINGS[name]


# --- model -> encoding ---------------------------------------------------------------------

def encoding_name_for_model(model: str, overrides: Mapping[str, str] | None = None) -> str:
    """The encoding of ``model``: the override map, then tiktoken's exact and prefix maps."""
    if not isinstance(model, str) or not model:
        raise UnknownModelError("model must be a non-empty string")
    if overrides and model in overrides:
        name = overrides[model]
        source = "the operator's override map"
    else:
        try:
            name = tiktoken.model.encoding_name_for_model(model)
        except KeyError:
            raise UnknownModelError(
                f"unknown model {model!r}: not in the operator's override map nor in "
                f"tiktoken's model map; add it to ZKMETER_MODEL_ENCODINGS") from None
        source = "tiktoken's model map"
    if name not in SUPPORTED_ENCODINGS:
        raise UnsupportedEncodingError(
            f"model {model!r} uses {name!r} (from {source}), which zkmeter does not ship")
    return name


def check_overrides(overrides: Mapping[str, str]) -> dict[str, str]:
    """Validate an operator's model -> encoding map; returns a plain copy."""
    out: dict[str, str] = {}
    for model, name in overrides.items():
        if not isinstance(model, str) or not model:
            raise UnknownModelError("override map: model names must be non-empty strings")
        if name not in SUPPORTED_ENCODINGS:
            raise UnsupportedEncodingError(
                f"override map: model {model!r} -> {name!r} is not a supported encoding")
        out[model] = name
    return out


# --- counting ------------------------------------------------------------------------------

def count_text(text: str, encoding: tiktoken.Encoding) -> int:
    """Tokens of ``text`` as ordinary text (special-token strings count as text)."""
    if not isinstance(text, str):
        raise MessageFormatError("text must be a string")
    return len(encoding.encode_ordinary(text))


def count_chat(messages: Sequence[Message], encoding: tiktoken.Encoding) -> int:
    """Prompt tokens of a chat request, with OpenAI's per-message, per-name and reply overhead."""
    if isinstance(messages, (str, bytes)) or not messages:
        raise MessageFormatError("a chat prompt needs at least one message")
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        if not isinstance(message, Message):
            raise MessageFormatError("chat messages must be verifier.tokens.Message values")
        total += TOKENS_PER_MESSAGE + count_text(message.role, encoding)
        total += count_text(message.content, encoding)
        if message.name is not None:
            total += TOKENS_PER_NAME + count_text(message.name, encoding)
    return total


@dataclass(frozen=True, slots=True)
class VisibleCounts:
    """What anyone holding the text can recount: the encoding used and both counts."""

    encoding: str
    input_tokens: int
    output_tokens: int


def count_visible(messages: Sequence[Message], completion: str, *, encoding: str) -> VisibleCounts:
    """Count a chat prompt and its completion with the named encoding."""
    enc = get_encoding(encoding)
    return VisibleCounts(encoding, count_chat(messages, enc), count_text(completion, enc))


class TokenCounter:
    """Model-aware counting with an operator's override map (validated once)."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self._overrides = check_overrides(overrides or {})

    def encoding_for(self, model: str) -> str:
        """The encoding name for ``model`` (raises UnknownModelError / UnsupportedEncodingError)."""
        return encoding_name_for_model(model, self._overrides)

    def count(self, model: str, messages: Sequence[Message], completion: str) -> VisibleCounts:
        """Count a chat request and its completion for ``model``."""
        return count_visible(messages, completion, encoding=self.encoding_for(model))


def count_many(
    jobs: Sequence[tuple[str, Sequence[tuple[str, str, str | None]], str]],
) -> list[tuple[int, int] | None]:
    """Count many (encoding, messages as (role, content, name), completion) jobs: a worker
    process's task (picklable plain values in and out). An item that cannot be counted gives
    None; the caller counts it itself to raise the proper error."""
    out: list[tuple[int, int] | None] = []
    for encoding, messages, completion in jobs:
        try:
            enc = get_encoding(encoding)
            out.append((count_chat([Message(*m) for m in messages], enc),
                        count_text(completion, enc)))
        except TokenCountError:
            out.append(None)
    return out
