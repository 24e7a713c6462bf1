"""``zkmeter chain``: the settlement commands live in :mod:`verifier.cli_chain` (settlers use
them from the verifier install); the operator's CLI mounts the same app."""

from verifier.cli_chain import app

__all__ = ["app"]
