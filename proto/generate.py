"""Generate the Python gRPC stubs from proto/zkmeter/v1/*.proto (committed; a test fails if
they are stale): ``python proto/generate.py [--check]``."""

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
PROTOS = sorted((ROOT / "zkmeter" / "v1").glob("*.proto"))


def generate(out: Path) -> None:
    """Run protoc into ``out`` (package layout zkmeter/v1 under it)."""
    include = Path(protoc.__file__).parent / "_proto"
    for proto in PROTOS:
        args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out}",
                f"--pyi_out={out}", f"--grpc_python_out={out}", str(proto.relative_to(ROOT))]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto.name}")


def generated_files(base: Path) -> list[Path]:
    """The generated files under ``base``, relative."""
    return sorted(p.relative_to(base) for p in (base / "zkmeter" / "v1").glob("*_pb2*.py*"))


def main(argv: list[str] | None = None) -> int:
    """Write the stubs beside the protos, or compare with --check."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh = generated_files(out)
        if args.check:
            stale = [str(p) for p in fresh
                     if not (ROOT / p).exists() or not filecmp.cmp(out / p, ROOT / p, False)]
            stale += [str(p) for p in generated_files(ROOT) if p not in fresh]
            if stale:
                print("stale generated stubs: " + ", ".join(stale))
                return 1
            print("generated stubs up to date")
            return 0
        for p in fresh:
            shutil.copyfile(out / p, ROOT / p)
    print(f"wrote {len(fresh)} files under {ROOT / 'zkmeter' / 'v1'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
