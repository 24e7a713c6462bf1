"""A command whose extra is not installed says which one to install, in one line and exit 2,
never a ModuleNotFoundError: every command, including those that import an optional module
before they check for it (verifier.extras.run_cli is the entry points' safety net).

The installs are simulated in a real process by making the modules that the install lacks
unimportable (``sys.modules[name] = None``); tests/journeys/test_wheel.py checks the same
on the real wheel in fresh virtual environments."""

import subprocess
import sys
from pathlib import Path

import pytest

from verifier.extras import MODULE_EXTRA

ROOT = Path(__file__).resolve().parents[2]
# py-ecc (a base dependency) brings these three, so the base install has them
IN_BASE = {"eth_utils", "eth_typing", "pydantic"}
WITHOUT = {
    "base": sorted(set(MODULE_EXTRA) - IN_BASE),
    "chain": sorted(m for m, extra in MODULE_EXTRA.items() if extra == "server"
                    and m not in IN_BASE),
}
CONTRACT = "0x" + "11" * 20
ACCOUNT = "0x" + "22" * 32


def run_without(install: str, argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    entry = "prover.cli" if argv[0] == "zkmeter" else "verifier.cli"
    code = ("import sys\n"
            f"sys.modules.update(dict.fromkeys({WITHOUT[install]!r}))\n"
            f"sys.argv = {argv!r}\n"
            f"from {entry} import main\n"
            "main()\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{ROOT / 'proto'}",
           "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env, check=False)


def commands(bundle: str) -> list[tuple[str, list[str], str]]:
    """(install, argv, the extra it must name)."""
    on_chain = ["--contract", CONTRACT]
    return [
        # these imported an optional module before checking: a traceback before run_cli
        ("base", ["zkmeter", "keys", "caller-key", "alice"], "server"),
        ("base", ["zkmeter", "gateway", "--upstream", "http://127.0.0.1:9/v1"], "server"),
        ("base", ["zkmeter", "upstream"], "server"),
        ("chain", ["zkmeter", "gateway", "--upstream", "http://127.0.0.1:9/v1"], "server"),
        ("chain", ["zkmeter", "keys", "caller-key", "alice"], "server"),
        ("base", ["zkmeter", "chain", "submit", *on_chain, "--bundle", bundle], "chain"),
        ("base", ["zkmeter", "chain", "answer", *on_chain, "--bundle", bundle, "--leaf", "0"],
         "chain"),
        ("base", ["zkmeter", "chain", "challenge", *on_chain, "--bundle", bundle, "--leaf",
                  "0"], "chain"),
        ("base", ["zkmeter-verify", "challenge", *on_chain, "--bundle", bundle, "--leaf", "0"],
         "chain"),
        # and those that always checked
        ("base", ["zkmeter", "serve"], "server"),
        ("base", ["zkmeter", "epoch", "close"], "server"),
        ("base", ["zkmeter", "keys", "api-key"], "server"),
        ("base", ["zkmeter", "accounts", "show", "--account-id", ACCOUNT], "server"),
        ("base", ["zkmeter", "demo"], "server"),
        ("chain", ["zkmeter", "serve"], "server"),
        ("base", ["zkmeter", "chain", "deploy"], "chain"),
        ("base", ["zkmeter-verify", "finalize", *on_chain, "--account-id", ACCOUNT, "--epoch",
                  "1"], "chain"),
        ("base", ["zkmeter-verify", "chain", "--rpc-url", "http://127.0.0.1:9", *on_chain,
                  "--epoch", "1", "--bundle", bundle], "chain"),
        ("base", ["zkmeter-verify", "chain", "--watch", "--rpc-url", "http://127.0.0.1:9",
                  *on_chain, "--bundle", bundle], "chain"),
    ]


CASES = commands("BUNDLE")


@pytest.mark.parametrize(("install", "argv", "extra"), CASES,
                         ids=[f"{i}:{' '.join(a[:3])}" for i, a, _ in CASES])
def test_a_missing_extra_is_named_in_one_line(install, argv, extra, epoch_files, tmp_path):
    argv = [str(epoch_files.bundle) if a == "BUNDLE" else a for a in argv]
    proc = run_without(install, argv, tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr, \
        proc.stderr
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"needs the [{extra}] extra" in lines[0]
    assert lines[0].endswith(f"pip install 'zkmeter[{extra}]'")


def test_the_base_commands_still_run_in_the_simulated_base_install(epoch_files, tmp_path):
    """The simulation blocks only optional modules: the verifier commands still work."""
    proc = run_without("base", ["zkmeter-verify", "bundle", str(epoch_files.bundle),
                                "--provider-key", epoch_files.provider_key, "--json"],
                       tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"ok": true' in proc.stdout


def test_an_unrelated_missing_module_still_raises(tmp_path):
    """Only our extras' modules are turned into the message; anything else is a bug and
    keeps its traceback."""
    code = ("import sys\n"
            "from verifier.extras import run_cli\n"
            "def app():\n"
            "    import zkmeter_no_such_module_for_the_test\n"
            "run_cli(app, 'zkmeter')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 1
    assert "ModuleNotFoundError" in proc.stderr
