"""What the gateway bills: the text a request sent and the text its caller received.

The mapping from OpenAI's JSON to zkmeter's chat messages is fixed here, so that a user who
kept its request and the reply can rebuild exactly the messages and completion a receipt's
digests bind (docs/gateway.md, "What is counted"):

* each request message becomes one ``(role, content, name)`` message: ``content`` is the
  string content, or the ``text`` of its text parts joined without separator (other parts,
  e.g. images, are not counted); an assistant message's ``tool_calls`` append
  ``function.name + function.arguments`` of each call, in order; a message without text
  counts with an empty content;
* the request's ``tools`` (function definitions), when present, are one more message at the
  end, role ``tools``, content the compact JSON of the list as the caller sent it
  (``json.dumps(tools, separators=(",", ":"), ensure_ascii=False)``);
* the completion is, for each choice in index order, its content followed by
  ``function.name + function.arguments`` of each tool call: for a stream, exactly the deltas
  that were sent to the caller, concatenated.

Nothing here keeps text beyond the objects the caller passes in; reprs never show it.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from verifier.tokens import Message, TokenCounter, count_chat, count_text, get_encoding


class RequestShapeError(ValueError):
    """The request body is not an OpenAI request the gateway can meter."""


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise RequestShapeError("a text content part needs a string 'text'")
                parts.append(text)
        return "".join(parts)
    raise RequestShapeError("message content must be a string, a list of parts or null")


def _tool_call_text(calls: Any) -> str:
    if not calls:
        return ""
    if not isinstance(calls, list):
        raise RequestShapeError("tool_calls must be a list")
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            out.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))
    return "".join(out)


def chat_messages(body: dict[str, Any]) -> list[Message]:
    """The zkmeter messages of a chat-completions request (module docstring)."""
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RequestShapeError("'messages' must be a non-empty list")
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise RequestShapeError("each message must be an object")
        role = item.get("role")
        if not isinstance(role, str) or not role:
            raise RequestShapeError("each message needs a 'role' string")
        name = item.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise RequestShapeError("a message 'name' must be a non-empty string")
        content = _text_of(item.get("content")) + _tool_call_text(item.get("tool_calls"))
        out.append(Message(role, content, name))
    tools = body.get("tools")
    if tools:
        out.append(Message("tools", json.dumps(tools, separators=(",", ":"),
                                               ensure_ascii=False)))
    return out


def completion_text(body: dict[str, Any]) -> str:
    """The completion of a non-streamed chat reply: every choice in index order."""
    choices = body.get("choices") or []
    parts = []
    for choice in sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict)
                         else 0):
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            parts.append(_text_of(message.get("content"))
                         + _tool_call_text(message.get("tool_calls")))
    return "".join(parts)


def prompt_texts(value: Any, what: str) -> list[str] | int:
    """The strings of a completions ``prompt`` or embeddings ``input``; token arrays are
    returned as their token count."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return len(value)
    if isinstance(value, list) and all(isinstance(v, list) and all(isinstance(t, int)
                                                                   for t in v) for v in value):
        return sum(len(v) for v in value)
    raise RequestShapeError(f"'{what}' must be a string, a list of strings or token arrays")


def text_completion(body: dict[str, Any]) -> str:
    """The completion of a non-streamed legacy completions reply."""
    choices = body.get("choices") or []
    return "".join(str(c.get("text") or "") for c in
                   sorted(choices, key=lambda c: c.get("index", 0)) if isinstance(c, dict))


@dataclass
class StreamText:
    """The deltas actually sent to the caller, per choice and tool call (text in memory)."""

    content: dict[int, list[str]] = field(default_factory=dict)
    tools: dict[int, dict[int, list[str]]] = field(default_factory=dict)

    def add_chunk(self, chunk: dict[str, Any]) -> None:
        """Account one chat.completion.chunk (or text_completion chunk) sent to the caller."""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0) if isinstance(choice.get("index"), int) else 0
            if "text" in choice:  # legacy completions
                self.content.setdefault(index, []).append(str(choice.get("text") or ""))
                continue
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            text = delta.get("content")
            if isinstance(text, str) and text:
                self.content.setdefault(index, []).append(text)
            for call in delta.get("tool_calls") or ():
                if not isinstance(call, dict):
                    continue
                slot = self.tools.setdefault(index, {}).setdefault(
                    call.get("index", 0) if isinstance(call.get("index"), int) else 0, [])
                fn = call.get("function")
                if isinstance(fn, dict):
                    slot.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))

    def text(self) -> str:
        """The completion, in the same form as :func:`completion_text`."""
        parts = []
        for index in sorted(set(self.content) | set(self.tools)):
            parts.append("".join(self.content.get(index, ())))
            calls = self.tools.get(index, {})
            parts.extend("".join(calls[i]) for i in sorted(calls))
        return "".join(parts)

    def __repr__(self) -> str:
        return f"StreamText(<{len(self.text())} chars>)"


@dataclass(frozen=True, slots=True)
class LocalCounts:
    """Visible counts the gateway computed itself (for the fallback and the cross-check)."""

    input_tokens: int
    output_tokens: int


class LocalCounter:
    """zkmeter's own counting code (verifier.tokens), run in the gateway."""

    def __init__(self, overrides: dict[str, str] | None = None) -> None:
        self._counter = TokenCounter(overrides or {})

    def encoding(self, model: str) -> str:
        """The encoding name of ``model`` (raises verifier.tokens errors for unknown ones)."""
        return self._counter.encoding_for(model)

    def chat(self, model: str, messages: list[Message], completion: str) -> LocalCounts:
        """Chat accounting of the prompt, plain count of the completion."""
        enc = get_encoding(self.encoding(model))
        return LocalCounts(count_chat(messages, enc), count_text(completion, enc))

    def plain(self, model: str, prompts: list[str] | int, completion: str) -> LocalCounts:
        """Plain counts (legacy completions and embeddings): no chat framing."""
        enc = get_encoding(self.encoding(model))
        inputs = prompts if isinstance(prompts, int) else sum(count_text(p, enc)
                                                                for p in prompts)
        return LocalCounts(inputs, count_text(completion, enc))
