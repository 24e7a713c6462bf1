"""Optional dependencies: which extra of the ``zkmeter`` package brings which module.

``pip install zkmeter`` is the verifier install (``zkmeter-verify bundle|audit|me|receipt``).
The chain commands need ``zkmeter[chain]`` (web3, and py-evm for the throwaway in-process
chain); the server (``zkmeter serve``, ``epoch close``, ``demo``) needs ``zkmeter[server]``.
A command that lacks its extra says which one to install (:class:`MissingExtra`), never a
bare ``ModuleNotFoundError``.
"""

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ARTIFACTS_ENV = "ZKMETER_CONTRACT_ARTIFACTS"  # the same variable verifier/chain.py reads

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


_GROUPS = ("chain", "keys", "epoch", "accounts")  # command groups: name the subcommand too


def run_cli(app: Callable[[], object], prog: str) -> None:
    """Run a command-line app; an optional dependency missing in a command that did not
    check for it itself (``needs``) is still one line naming the extra, and exit 2, never a
    ModuleNotFoundError traceback."""
    try:
        app()
    except ModuleNotFoundError as exc:
        extra = extra_for(exc)
        if extra is None:
            raise
        words = sys.argv[1:3] if sys.argv[1:2] and sys.argv[1] in _GROUPS else sys.argv[1:2]
        command = " ".join([prog, *(w for w in words if not w.startswith("-"))])
        print(f"{prog}: {MissingExtra(extra, exc.name or '?', command)}", file=sys.stderr)
        raise SystemExit(2) from None


def packaged_artifacts() -> Path:
    """Where an installed wheel keeps the contract artifacts (copied in by setup.py)."""
    return Path(__file__).resolve().parent / "contracts"


def use_packaged_artifacts() -> None:
    """Point the chain code at the wheel's artifacts when there is no source checkout beside
    the package (verifier/chain.py looks in ``<checkout>/contracts/artifacts``) and no
    explicit ``$ZKMETER_CONTRACT_ARTIFACTS``. Called by both command-line entry points."""
    checkout = Path(__file__).resolve().parents[1] / "contracts" / "artifacts"
    if os.environ.get(ARTIFACTS_ENV) or checkout.is_dir():
        return
    if packaged_artifacts().is_dir():
        os.environ[ARTIFACTS_ENV] = str(packaged_artifacts())


__all__ = ["ARTIFACTS_ENV", "MODULE_EXTRA", "MissingExtra", "extra_for", "needs",
           "packaged_artifacts", "run_cli", "use_packaged_artifacts"]
