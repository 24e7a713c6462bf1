"""Reading inputs for the verifier: local files or http(s) URLs, with clear errors."""

import urllib.error
import urllib.request
from pathlib import Path

MAX_BYTES = 256 * 1024 * 1024


class InputError(ValueError):
    """An input cannot be read (missing file, unreachable URL, too large)."""


def read_source(source: str, *, timeout: float = 30.0) -> bytes:
    """The bytes of a file path or an http(s) URL."""
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=timeout) as response:  # noqa: S310
                data: bytes = response.read(MAX_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise InputError(f"cannot fetch {source}: {exc}") from None
    else:
        path = Path(source)
        try:
            if path.stat().st_size > MAX_BYTES:
                raise InputError(f"{source} is larger than {MAX_BYTES} bytes")
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {source}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise InputError(f"{source} is larger than {MAX_BYTES} bytes")
    return data
