"""The dependency direction circuits <- verifier <- prover, and a verifier without the server
stack: importing every verifier module loads no prover, grpc, fastapi or database code."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_STACK = ("prover", "grpc", "fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg")


def imported_packages(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_circuits_imports_neither_verifier_nor_prover():
    assert not imported_packages("circuits") & {"verifier", "prover", "zkmeter"}


def test_verifier_never_imports_the_server_stack():
    assert not imported_packages("verifier") & set(SERVER_STACK)


def test_importing_the_verifier_loads_no_server_module():
    modules = [p.stem for p in (ROOT / "verifier").glob("*.py") if p.stem != "__main__"]
    code = ("import sys\n" + "".join(f"import verifier.{m}\n" for m in modules) +
            f"bad = [m for m in sys.modules if m.split('.')[0] in {SERVER_STACK!r}]\n"
            "print(','.join(sorted(bad)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_the_base_install_has_no_server_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    for package in ("grpcio", "fastapi", "sqlalchemy", "psycopg", "alembic", "uvicorn"):
        assert package not in base
    assert "grpcio" in " ".join(project["optional-dependencies"]["server"])


def test_prover_chain_is_the_verifiers_client_under_a_short_name():
    """prover.chain re-exports verifier.chain_client's public names (one list, its __all__),
    the very same objects, and nothing private."""
    import prover.chain
    import verifier.chain_client

    names = verifier.chain_client.__all__
    assert "ChainClient" in names and not any(n.startswith("_") for n in names)
    assert prover.chain.__all__ == names
    for name in names:
        assert getattr(prover.chain, name) is getattr(verifier.chain_client, name), name
    assert not hasattr(prover.chain, "_revert_data")


def test_the_escrow_core_imports_no_web3():
    """Prepaid limits (prover/accounts/escrow.py, admission.py) know no chain: only the
    chain-backed source (chain_escrow.py) imports web3."""
    for name in ("escrow.py", "admission.py"):
        tree = ast.parse((ROOT / "prover" / "accounts" / name).read_text())
        modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                   for alias in node.names}
        modules |= {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m for m in modules if m.split(".")[0] in ("web3", "eth_utils", "eth_abi")
                    or m in ("prover.chain", "verifier.chain", "verifier.chain_client")}, name
