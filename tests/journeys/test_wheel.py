"""Packaging: the wheel is self-contained and its extras are what each role needs.

Builds the wheel from a copy of the checkout, installs it into one fresh virtual environment
in three steps (base, then ``[chain]``, then ``[server]``), and after each step runs the
commands that install must serve, as real subprocesses: the base install runs the verifier
commands (bundle, audit, payer, me, receipt) and names the missing extra for the others;
``[chain]`` deploys from the packaged artifacts on anvil and checks a bundle against the
chain; ``[server]`` starts up far enough to refuse the unset contract. The settler's commands
(finalize, challenge, demand, resolve, withdraw, chain-status) run from ``zkmeter-verify``
with only ``[chain]``. Each step's size (packages, MB) is printed (run with ``-s`` to see it).
"""

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from tests.anvil import rpc
from tests.journeys.conftest import chain_bundle

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(cmd, *, env=None, cwd=None, timeout=900):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd, check=False)


def site_size(env_dir: Path) -> tuple[int, float]:
    """(distributions installed besides pip/setuptools, MB of site-packages)."""
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    dists = [p for p in site.glob("*.dist-info")
             if not p.name.startswith(("pip-", "setuptools-"))]
    tools = ("pip", "setuptools", "_distutils_hack", "pkg_resources")
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file()
               and not f.relative_to(site).parts[0].startswith(tools))
    return len(dists), size / 1e6


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the tracked files (the checkout is not touched)."""
    src = tmp_path_factory.mktemp("src")
    files = run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    proc = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "-q", "-w", out, src])
    assert proc.returncode == 0, proc.stderr[-2000:]
    (built,) = out.glob("zkmeter-*.whl")
    return built


def test_the_wheel_installs_each_role_with_its_extra(wheel, tmp_path, epoch_files, anvil):
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    for artifact in (ROOT / "contracts" / "artifacts").glob("*.json"):
        assert f"verifier/contracts/{artifact.name}" in names
    assert "verifier/encodings/cl100k_base.tiktoken" in names

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_ = env_dir / "bin"
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("ZKMETER_", "PYTHON", "VIRTUAL_ENV"))}
    work = tmp_path / "work"  # not the checkout: nothing may be found beside the sources
    work.mkdir()
    sizes = {}

    def install(spec: str) -> None:
        proc = run([bin_ / "pip", "install", "-q", spec], env=clean)
        assert proc.returncode == 0, proc.stderr[-2000:]

    def cli(*args, expect=0):
        proc = run([bin_ / args[0], *args[1:]], env=clean, cwd=work)
        assert proc.returncode == expect, (args, proc.stdout[-1500:], proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr
        return proc

    # --- base: the verifier install ----------------------------------------------------
    install(str(wheel))
    sizes["zkmeter"] = site_size(env_dir)
    f = epoch_files
    out = json.loads(cli("zkmeter-verify", "bundle", f.bundle, "--provider-key",
                         f.provider_key, "--json").stdout)
    assert out["ok"] and out["not_checked"] == []
    out = json.loads(cli("zkmeter-verify", "audit", f.bundle, "--openings", f.openings,
                         "--json").stdout)
    assert out["ok"] and out["not_checked"] == ["tags_unlinkable"]
    out = json.loads(cli("zkmeter-verify", "me", "--openings", f.openings, "--secret-key",
                         f.secret_key, "--receipts", f.receipts, "--texts", f.texts,
                         "--bundle", f.bundle, "--user-id", "alice", "--json").stdout)
    assert out["ok"] and out["committed_units"] == out["receipted_units"] > 0
    out = json.loads(cli("zkmeter-verify", "payer", "--bundle", f.bundle, "--statement",
                         f.statement, "--secret-key", f.payer_key, "--users", f.users,
                         "--receipts", f.receipts, "--json").stdout)
    assert out["ok"] and out["not_checked"] == ["range_proofs", "chain"], out
    for receipts in (f.one_receipt, f.receipts):
        out = json.loads(cli("zkmeter-verify", "receipt", receipts, "--provider-key",
                             f.provider_key, "--json").stdout)
        assert out["ok"]
    user_key = work / "me.key"
    assert len(cli("zkmeter", "keys", "user-key", "--out", user_key).stdout.strip()) == 64
    assert oct(user_key.stat().st_mode & 0o777) == "0o600"
    for args, extra in [(("zkmeter-verify", "chain", "--rpc-url", anvil, "--contract",
                          "0x" + "11" * 20, "--epoch", "1", "--bundle", f.bundle), "chain"),
                        (("zkmeter", "chain", "deploy"), "chain"),
                        (("zkmeter-verify", "finalize", "--contract", "0x" + "11" * 20,
                          "--account-id", "0x" + "22" * 32, "--epoch", "1"), "chain"),
                        (("zkmeter-verify", "challenge", "--contract", "0x" + "11" * 20,
                          "--bundle", f.bundle, "--leaf", "0"), "chain"),
                        (("zkmeter", "gateway", "--upstream", "http://127.0.0.1:9/v1"),
                         "server"),
                        (("zkmeter", "keys", "caller-key", "alice"), "server"),
                        (("zkmeter", "serve"), "server"),
                        (("zkmeter", "epoch", "close"), "server")]:
        proc = cli(*args, expect=2)
        assert f"pip install 'zkmeter[{extra}]'" in proc.stderr + proc.stdout, args

    # --- [chain]: the chain commands and the settler's side ----------------------------
    install(f"{wheel}[chain]")
    sizes["zkmeter[chain]"] = site_size(env_dir)
    proc = cli("zkmeter", "chain", "deploy")
    assert "throwaway in-process chain" in proc.stdout + proc.stderr
    deployed = json.loads(cli("zkmeter", "chain", "deploy", "--rpc-url", anvil,
                              "--json").stdout)
    assert deployed["chain_id"] == 31337
    # the published code of the deployment matches the packaged artifacts; this bundle is
    # for another contract, which the check names
    out = json.loads(cli("zkmeter-verify", "chain", "--rpc-url", anvil, "--contract",
                         deployed["settlement"], "--epoch", "1", "--bundle", f.bundle,
                         "--json", expect=1).stdout)
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["contract_code"]["ok"] is True
    assert checks["chain_context"]["ok"] is False
    # every settler command (and what a provider and payer need first), from this install
    contract = ["--rpc-url", anvil, "--contract", deployed["settlement"]]
    operator, payer, settler = rpc(anvil, "eth_accounts")[:3]
    key = SigningKey(b"journey wheel test provider key!")
    pid = json.loads(cli("zkmeter", "chain", "register", *contract, "--unit-price", "1000",
                         "--signing-key", bytes(key.verify_key).hex(),
                         "--json").stdout)["provider_id"]
    aid = json.loads(cli("zkmeter", "chain", "open-account", *contract, "--provider-id", pid,
                         "--from", payer, "--json").stdout)["account_id"]
    cli("zkmeter", "chain", "deposit", *contract, "--account-id", aid, "--amount", str(10**18),
        "--from", payer)
    bundle = chain_bundle(chain_id=31337, contract=deployed["settlement"], epoch_id=1,
                          totals={"alice": 1_200, "bob": 34_000}, signing_key=key,
                          operator=operator, payer=payer)
    path = work / "bundle.json"
    path.write_text(bundle.dumps())
    cli("zkmeter", "chain", "submit", *contract, "--bundle", path, "--account-id", aid)
    settle = [*contract, "--account-id", aid, "--epoch", "1", "--from", settler]
    # the settler's side from zkmeter-verify (the same commands as zkmeter chain's)
    early = cli("zkmeter-verify", "finalize", *settle, expect=1)
    assert "cannot be finalized yet" in early.stderr and " UTC (in " in early.stderr
    valid = json.loads(cli("zkmeter-verify", "challenge", *contract, "--bundle", path,
                           "--leaf", "0", "--account-id", aid, "--from", settler, "--json",
                           expect=1).stdout)
    assert valid["contract_error"] == "RangeProofValid"  # an honest leaf is not slashable
    cli("zkmeter-verify", "demand", *settle, "--leaf", "1")
    cli("zkmeter", "chain", "answer", *contract, "--bundle", path, "--leaf", "1",
        "--account-id", aid)
    out = json.loads(cli("zkmeter-verify", "chain", "--rpc-url", anvil, "--contract",
                         deployed["settlement"], "--epoch", "1", "--bundle", path,
                         "--account-id", aid, "--json").stdout)
    assert out["ok"], out
    rpc(anvil, "evm_increaseTime", [7_300])
    rpc(anvil, "evm_mine")
    done = json.loads(cli("zkmeter-verify", "finalize", *settle, "--json").stdout)
    assert done["epoch"]["status"] == "finalized"
    nothing = cli("zkmeter-verify", "withdraw", *contract, "--from", settler, expect=1)
    assert "has nothing to withdraw" in nothing.stderr
    status = json.loads(cli("zkmeter-verify", "chain-status", *contract, "--provider-id", pid,
                            "--account-id", aid, "--json").stdout)
    assert status["provider"]["earnings_eth"] == 35_200 * 1000
    # the next epoch's demanded data is withheld: resolved after the deadline, the settler
    # withdraws its demand bond and its share of the slashed bond
    bundle = chain_bundle(chain_id=31337, contract=deployed["settlement"], epoch_id=2,
                          totals={"alice": 5, "bob": 7}, signing_key=key,
                          operator=operator, payer=payer)
    path.write_text(bundle.dumps())
    cli("zkmeter", "chain", "submit", *contract, "--bundle", path, "--account-id", aid)
    settle = [*contract, "--account-id", aid, "--epoch", "2", "--from", settler]
    cli("zkmeter-verify", "demand", *settle, "--leaf", "0")
    rpc(anvil, "evm_increaseTime", [3_700])
    rpc(anvil, "evm_mine")
    resolved = json.loads(cli("zkmeter-verify", "resolve", *settle, "--leaf", "0",
                              "--json").stdout)
    assert resolved["epoch"]["status"] == "rejected"
    share = json.loads(cli("zkmeter-verify", "withdraw", *contract, "--from", settler,
                           "--json").stdout)
    assert share["withdrawn"] > 10**16  # more than the demand bond back

    # --- [server]: the operator's server starts up and refuses the unset contract ------
    install(f"{wheel}[server]")
    sizes["zkmeter[server]"] = site_size(env_dir)
    clean["ZKMETER_SIGNING_KEY"] = "e1" + "".join(f"{i:02x}" for i in range(31))
    clean["ZKMETER_DATABASE_URL"] = f"sqlite:///{work / 'op.sqlite'}"
    proc = cli("zkmeter", "serve", expect=2)
    assert "ZKMETER_CONTRACT_ADDRESS is not set" in proc.stderr
    key_line = cli("zkmeter", "keys", "api-key").stderr.strip()
    assert key_line.startswith("ZKMETER_API_KEY_HASHES='{\"sha256:")

    for what, (count, mb) in sizes.items():
        print(f"install size: {what}: {count} distributions, {mb:.1f} MB site-packages")
