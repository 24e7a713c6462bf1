"""Offline token counting: shipped files, known counts, model map, chat accounting, errors."""

import hashlib
import inspect
import socket
from pathlib import Path

import pytest
import tiktoken_ext.openai_public as openai_public

from verifier import tokens
from verifier.tokens import (
    REPLY_PRIMING_TOKENS,
    SHIPPED_ENCODINGS,
    SUPPORTED_ENCODINGS,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    EncodingFileError,
    Message,
    MessageFormatError,
    TokenCounter,
    UnknownModelError,
    UnsupportedEncodingError,
    count_chat,
    count_text,
    encoding_name_for_model,
    get_encoding,
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a socket while counting fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("token counting tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_shipped_files_match_tiktokens_own_pins():
    source = inspect.getsource(openai_public)
    for name, sha in SHIPPED_ENCODINGS.items():
        data = (tokens.ENCODINGS_DIR / f"{name}.tiktoken").read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha
        assert f'expected_hash="{sha}"' in source


@pytest.mark.parametrize(("name", "ids"), [("cl100k_base", [15339, 1917]),
                                           ("o200k_base", [24912, 2375]),
                                           ("o200k_harmony", [24912, 2375])])
def test_known_ids(name, ids):
    assert get_encoding(name).encode_ordinary("hello world") == ids


@pytest.mark.parametrize("name", SUPPORTED_ENCODINGS)
def test_tiktoken_is_great_is_six_tokens(name):
    assert count_text("tiktoken is great!", get_encoding(name)) == 6


def test_encodings_are_tiktokens_own_specs():
    o200k = get_encoding("o200k_base")
    assert o200k.n_vocab == 200019
    assert o200k._special_tokens == {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}
    assert get_encoding("cl100k_base")._special_tokens["<|endofprompt|>"] == 100276
    harmony = get_encoding("o200k_harmony")
    assert harmony._special_tokens["<|channel|>"] == 200005
    assert harmony.n_vocab == 201088


def test_special_token_text_is_counted_as_text_and_never_raises():
    enc = get_encoding("cl100k_base")
    assert count_text("<|endoftext|>", enc) == len(enc.encode_ordinary("<|endoftext|>")) > 1


@pytest.mark.parametrize("name", ["gpt2", "r50k_base", "p50k_base", "p50k_edit", "nope"])
def test_unshipped_encodings_are_refused_without_fetching(name):
    with pytest.raises(UnsupportedEncodingError):
        get_encoding(name)


def test_loader_refuses_unknown_blob_and_wrong_pin():
    with pytest.raises(UnsupportedEncodingError):
        tokens._shipped_loader("https://openaipublic.blob.core.windows.net/encodings/"
                               "r50k_base.tiktoken", "00" * 32)
    with pytest.raises(UnsupportedEncodingError):
        tokens._shipped_loader("https://evil.example/encodings/o200k_base.tiktoken",
                               SHIPPED_ENCODINGS["o200k_base"])
    with pytest.raises(EncodingFileError):
        tokens._shipped_loader("https://openaipublic.blob.core.windows.net/encodings/"
                               "o200k_base.tiktoken", "11" * 32)


@pytest.mark.parametrize("cache", ["", "fresh"])
def test_corrupt_shipped_file_is_refused(tmp_path, monkeypatch, cache):
    good = (tokens.ENCODINGS_DIR / "cl100k_base.tiktoken").read_bytes()
    (tmp_path / "cl100k_base.tiktoken").write_bytes(good.replace(b" 100\n", b" 101\n", 1))
    monkeypatch.setattr(tokens, "ENCODINGS_DIR", tmp_path)
    monkeypatch.setattr(tokens, "_RANKS", {})
    # tiktoken itself skips its check when caching is off (""): our own check must hold.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache") if cache else "")
    with pytest.raises(EncodingFileError):
        tokens._shipped_loader("https://openaipublic.blob.core.windows.net/encodings/"
                               "cl100k_base.tiktoken", SHIPPED_ENCODINGS["cl100k_base"])


def test_missing_shipped_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tokens, "ENCODINGS_DIR", tmp_path)
    monkeypatch.setattr(tokens, "_RANKS", {})
    with pytest.raises(EncodingFileError):
        tokens._shipped_loader("https://openaipublic.blob.core.windows.net/encodings/"
                               "o200k_base.tiktoken", SHIPPED_ENCODINGS["o200k_base"])


def test_loader_patch_is_restored():
    tokens._ENCODINGS.pop("cl100k_base", None)
    get_encoding("cl100k_base")
    assert openai_public.load_tiktoken_bpe is tokens._real_load_tiktoken_bpe


@pytest.mark.parametrize(("model", "name"), [
    ("gpt-4o", "o200k_base"), ("gpt-4o-2024-08-06", "o200k_base"), ("gpt-4", "cl100k_base"),
    ("gpt-4-0613", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"), ("o3", "o200k_base"),
    ("gpt-oss-120b", "o200k_harmony"), ("text-embedding-3-small", "cl100k_base"),
])
def test_model_map_is_tiktokens(model, name):
    assert encoding_name_for_model(model) == name


def test_overrides_come_first_and_are_exact():
    counter = TokenCounter({"custom-llm": "cl100k_base", "gpt-4o": "cl100k_base"})
    assert counter.encoding_for("custom-llm") == "cl100k_base"
    assert counter.encoding_for("gpt-4o") == "cl100k_base"
    with pytest.raises(UnknownModelError):
        counter.encoding_for("custom-llm-2")


@pytest.mark.parametrize("model", ["llama-3-70b", "claude-3", "", "GPT-4O"])
def test_unknown_model_is_an_error_not_a_guess(model):
    with pytest.raises(UnknownModelError):
        encoding_name_for_model(model)


def test_model_with_unshipped_encoding_is_an_error():
    with pytest.raises(UnsupportedEncodingError, match="r50k_base"):
        encoding_name_for_model("davinci")


@pytest.mark.parametrize("bad", [{"m": "r50k_base"}, {"m": "o200k"}, {"": "o200k_base"}])
def test_bad_overrides_are_refused(bad):
    with pytest.raises((UnknownModelError, UnsupportedEncodingError)):
        TokenCounter(bad)


def test_chat_accounting_matches_openai_cookbook_formula():
    enc = get_encoding("o200k_base")
    messages = [
        Message("system", "You are a helpful assistant."),
        Message("user", "What is 2+2?", name="alice"),
        Message("assistant", "4"),
    ]
    expected = REPLY_PRIMING_TOKENS
    for m in messages:
        expected += TOKENS_PER_MESSAGE + len(enc.encode(m.role)) + len(enc.encode(m.content))
        if m.name:
            expected += TOKENS_PER_NAME + len(enc.encode(m.name))
    assert count_chat(messages, enc) == expected
    # The cookbook's worked example: these overheads on top of the text.
    assert (TOKENS_PER_MESSAGE, TOKENS_PER_NAME, REPLY_PRIMING_TOKENS) == (3, 1, 3)


def test_chat_known_small_count():
    # 3 (message) + 1 ("user") + 2 ("hello world") + 3 (priming)
    assert count_chat([Message("user", "hello world")], get_encoding("cl100k_base")) == 9
    # a name adds 1 + its tokens
    assert count_chat([Message("user", "hello world", name="bob")],
                      get_encoding("cl100k_base")) == 11


def test_completion_counts_as_plain_text():
    counts = TokenCounter().count("gpt-4o", [Message("user", "hi")], "tiktoken is great!")
    assert counts.output_tokens == 6
    assert counts.encoding == "o200k_base"
    assert TokenCounter().count("gpt-4o", [Message("user", "hi")], "").output_tokens == 0


@pytest.mark.parametrize("kwargs", [
    {"role": "", "content": "x"}, {"role": 1, "content": "x"}, {"role": "user", "content": None},
    {"role": "user", "content": b"x"}, {"role": "user", "content": "x", "name": ""},
    {"role": "user", "content": "x", "name": 5},
])
def test_bad_messages_are_refused(kwargs):
    with pytest.raises(MessageFormatError):
        Message(**kwargs)


@pytest.mark.parametrize("messages", [[], "hello", [("user", "hello")], [{"role": "user"}]])
def test_bad_message_lists_are_refused(messages):
    with pytest.raises(MessageFormatError):
        count_chat(messages, get_encoding("cl100k_base"))


def test_count_text_refuses_non_strings():
    with pytest.raises(MessageFormatError):
        count_text(b"bytes", get_encoding("cl100k_base"))


def test_message_repr_hides_text():
    m = Message("user", "the launch code is 1234", name="agent-smith")
    assert "launch" not in repr(m) and "launch" not in str(m) and "smith" not in repr(m)


def test_verifier_side_imports_no_server_stack():
    import subprocess
    import sys
    code = ("import sys, verifier.tokens, verifier.receipts; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('prover', 'sqlalchemy', 'alembic', 'psycopg', 'grpc', 'fastapi', 'pydantic')); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_unwritable_tiktoken_cache_dir_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(tokens, "_RANKS", {})
    with pytest.raises(EncodingFileError, match="TIKTOKEN_CACHE_DIR"):
        tokens._shipped_loader("https://openaipublic.blob.core.windows.net/encodings/"
                               "cl100k_base.tiktoken", SHIPPED_ENCODINGS["cl100k_base"])
