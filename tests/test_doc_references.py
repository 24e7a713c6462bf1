"""Every document a tracked file points a reader at exists in the repository: a ``NAME.md``
named in a doc, docstring, comment, proto or contract is a tracked file (by its path from the
root or from the naming file's folder, or, for a bare name, the one tracked file of that
name). Documents kept outside the repository (a design note, a toolchain log) must not be
cited as if a reader had them."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = (".md", ".py", ".proto", ".sol", ".toml", ".js")
SELF = "tests/test_doc_references.py"  # its examples name documents that do not exist
REFERENCE = re.compile(r"(?<![\w./-])([\w./-]*\w\.md)\b")


def tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return [name for name in out.split("\0") if name]


def unresolved(files: list[str], root: Path = ROOT) -> list[str]:
    names = set(files)
    by_base: dict[str, list[str]] = {}
    for name in files:
        by_base.setdefault(Path(name).name, []).append(name)
    missing = []
    for name in files:
        if not name.endswith(SUFFIXES) or "node_modules/" in name or name == SELF:
            continue
        text = (root / name).read_text(errors="replace")
        folder = Path(name).parent
        for ref in set(REFERENCE.findall(text)):
            ref = ref.removeprefix("./")
            if ref.startswith(("http", "//")):
                continue
            here = (folder / ref).as_posix()
            if ref in names or here in names or ("/" not in ref
                                                 and len(by_base.get(ref, [])) == 1):
                continue
            missing.append(f"{name}: {ref}")
    return sorted(missing)


def test_every_document_named_exists():
    assert unresolved(tracked()) == []


def test_a_document_that_is_not_in_the_repository_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "epoch.md").write_text("the format\n")
    (tmp_path / "mod.py").write_text('"""See DESIGN.md §2, docs/epoch.md and epoch.md."""\n')
    (tmp_path / "docs" / "a.md").write_text("see epoch.md, ../mod.py and docs/x.md\n")
    found = unresolved(["docs/epoch.md", "mod.py", "docs/a.md"], root=tmp_path)
    assert found == ["docs/a.md: docs/x.md", "mod.py: DESIGN.md"]
