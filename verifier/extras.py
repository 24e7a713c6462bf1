"""Optional dependencies: which extra of the ``zkmeter`` package brings which module.

``pip install zkmeter`` is the verifier install (``zkmeter-verify bundle|audit|me|receipt``).
The chain commands need ``zkmeter[chain]`` (web3, and py-evm for the throwaway in-process
chain); the server (``zkmeter serve``, ``epoch close``, ``demo``) needs ``zkmeter[server]``.
A command that lacks its extra says which one to install (:class:`MissingExtra`), never a
bare ``ModuleNotFoundError``.
"""

from collections.abc import Iterator
from contextlib import contextmanager

# Top-level module name -> the extra that installs it.
MODULE_EXTRA: dict[str, str] = {
    **dict.fromkeys(("web3", "eth_abi", "eth_account", "eth_utils", "eth_typing", "hexbytes",
                     "eth_tester", "eth", "rlp", "trie"), "chain"),
    **dict.fromkeys(("sqlalchemy", "alembic", "psycopg", "pydantic", "pydantic_settings",
                     "grpc", "grpc_health", "grpc_reflection", "grpc_status", "google",
                     "fastapi", "starlette", "uvicorn", "prometheus_client", "httpx"),
                    "server"),
}


class MissingExtra(RuntimeError):
    """A command needs an optional dependency that is not installed."""

    def __init__(self, extra: str, module: str, command: str) -> None:
        self.extra = extra
        self.module = module
        super().__init__(f"{command} needs the [{extra}] extra (module {module!r} is not "
                         f"installed): pip install 'zkmeter[{extra}]'")


def extra_for(exc: ModuleNotFoundError) -> str | None:
    """The extra that would have provided the missing module, if it is one of ours."""
    top = (exc.name or "").split(".")[0]
    return MODULE_EXTRA.get(top)


@contextmanager
def needs(extra: str, command: str) -> Iterator[None]:
    """Turn a ModuleNotFoundError of an optional dependency into :class:`MissingExtra`.

    ``extra`` is what the command documents it needs; ``[server]`` includes ``[chain]``, so
    a chain command names the extra of the module actually missing."""
    try:
        yield
    except ModuleNotFoundError as exc:
        found = extra_for(exc)
        if found is None:
            raise
        raise MissingExtra("server" if extra == "server" else found, exc.name or "?",
                           command) from None


__all__ = ["MODULE_EXTRA", "MissingExtra", "extra_for", "needs"]
