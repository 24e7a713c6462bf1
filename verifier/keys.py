"""A user's X25519 key pair: the secret key file only its owner can read, and the public key
the gateway registers (its sealed openings are encrypted to it).

The file holds the 32-byte secret key as 64 hex characters and a newline, created with mode
0600 (never replaced unless asked). ``zkmeter-verify me --secret-key FILE`` reads it.
"""

import os
from pathlib import Path

from nacl.public import PrivateKey

SECRET_FILE_MODE = 0o600


class KeyFileError(ValueError):
    """The key file cannot be written (exists, or the directory is not writable)."""


def write_secret_file(path: Path, secret: bytes, *, overwrite: bool = False) -> None:
    """Write ``secret`` as hex to ``path`` with mode 0600 (created that way: the secret is
    never readable by others, not even for a moment)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, SECRET_FILE_MODE)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists (pass --force to replace it)") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), SECRET_FILE_MODE)  # an existing file keeps no wider mode
        out.write(secret.hex() + "\n")


def new_user_key(path: Path, *, overwrite: bool = False) -> bytes:
    """Create a user's X25519 key pair, the secret in ``path`` (0600); returns the public
    key (32 bytes)."""
    key = PrivateKey.generate()
    write_secret_file(path, bytes(key), overwrite=overwrite)
    return bytes(key.public_key)


__all__ = ["SECRET_FILE_MODE", "KeyFileError", "new_user_key", "write_secret_file"]
