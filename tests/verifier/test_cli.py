"""zkmeter-verify's contract: exit codes 0/1/2, --json shape, stable check names."""

import copy
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from verifier.cli import app

runner = CliRunner()


@pytest.fixture()
def bundle_file(tmp_path, small_bundle_json):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(small_bundle_json))
    return path


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout


def test_bundle_ok_json(bundle_file):
    code, out = run("bundle", bundle_file, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["ok"] is True
    assert [c["name"] for c in data["checks"]] == [
        "structure", "encodings", "signature", "merkle_root", "aggregate", "range_proofs",
        "provider_key"]
    # without a pinned key the signature was checked only against the bundle's own key:
    # that is said, and the pinning is "not checked", never "ok"
    checks = {c["name"]: c for c in data["checks"]}
    assert "key inside the bundle" in checks["signature"]["detail"]
    assert checks["provider_key"]["ok"] is None
    assert checks["provider_key"]["status"] == "not_checked"
    assert data["not_checked"] == ["provider_key"]


def test_bundle_with_the_pinned_provider_key(bundle_file, small_bundle_json):
    key = small_bundle_json["provider_id"]
    code, out = run("bundle", bundle_file, "--provider-key", key, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["not_checked"] == []
    assert all(c["status"] == "ok" for c in data["checks"])
    code, out = run("bundle", bundle_file, "--provider-key", "22" * 32, "--json")
    assert code == 1
    assert {c["name"]: c for c in json.loads(out)["checks"]}["signature"]["ok"] is False


def test_bundle_human_output(bundle_file):
    code, out = run("bundle", bundle_file)
    assert code == 0
    assert "verified" in out and "range_proofs" in out
    assert "not checked: provider_key" in " ".join(out.split())


def test_tampered_bundle_exits_1_and_names_the_leaf(tmp_path, small_bundle_json):
    data = copy.deepcopy(small_bundle_json)
    proof = bytearray.fromhex(data["leaves"][9]["proof"][2:])
    proof[100] ^= 0x80
    data["leaves"][9]["proof"] = "0x" + proof.hex()
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    code, out = run("bundle", path, "--json")
    assert code == 1
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["range_proofs"]["failing_leaves"] == [9]
    assert checks["aggregate"]["ok"] is True


@pytest.mark.parametrize("content", [
    "not json", "[]", '{"version": 1}', '{"version": 2}',
])
def test_malformed_bundles_exit_2(tmp_path, content):
    path = tmp_path / "b.json"
    path.write_text(content)
    code, out = run("bundle", path, "--json")
    assert code == 2
    assert json.loads(out)["ok"] is False


def test_wrong_field_types_exit_2(tmp_path, small_bundle_json):
    for field, value in [("epoch_id", "5"), ("contract", "0x1234"), ("bit_size", 33),
                         ("leaves", [])]:
        data = copy.deepcopy(small_bundle_json)
        data[field] = value
        path = tmp_path / "b.json"
        path.write_text(json.dumps(data))
        code, _ = run("bundle", path, "--json")
        assert code == 2, field


def test_missing_file_exits_2(tmp_path):
    code, out = run("bundle", tmp_path / "missing.json", "--json")
    assert code == 2
    assert "cannot read" in json.loads(out)["error"]


def test_bad_provider_key_argument_exits_2(bundle_file):
    code, _ = run("bundle", bundle_file, "--provider-key", "zz", "--json")
    assert code == 2


def test_audit_clean(bundle_file, small_epoch, tmp_path):
    openings = tmp_path / "openings.json"
    openings.write_text(json.dumps({"0x" + t.hex(): "0x" + s.hex()
                                    for t, s in small_epoch.sealed.items()}))
    code, out = run("audit", bundle_file, "--openings", openings, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["anonymity_set"] == 16
    assert data["warnings"] == []
    # without --previous, unlinkability across epochs did not run: said so, never "ok"
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["tags_unlinkable"]["status"] == "not_checked"
    assert "--previous" in checks["tags_unlinkable"]["detail"]
    assert checks["sealed_openings"]["status"] == "ok"
    assert data["not_checked"] == ["tags_unlinkable"]


def test_audit_without_openings_says_they_were_not_checked(bundle_file, tmp_path,
                                                           small_bundle_json):
    other = copy.deepcopy(small_bundle_json)
    for i, leaf in enumerate(other["leaves"]):  # an earlier epoch with other tags
        leaf["tag"] = "0x" + f"{i:064x}"
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps(other))
    code, out = run("audit", bundle_file, "--previous", earlier, "--json")
    assert code == 0
    data = json.loads(out)
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["tags_unlinkable"]["status"] == "ok"
    assert checks["sealed_openings"]["status"] == "not_checked"
    assert data["not_checked"] == ["sealed_openings"]


def test_audit_flags_an_identifier_field(tmp_path, small_bundle_json):
    data = copy.deepcopy(small_bundle_json)
    data["leaves"][0]["user"] = "alice@example.com"
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    code, out = run("audit", path, "--json")
    assert code == 1
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["no_identifiers"]["ok"] is False


def test_audit_flags_reused_tags(bundle_file):
    code, out = run("audit", bundle_file, "--previous", bundle_file, "--json")
    assert code == 1
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["tags_unlinkable"]["ok"] is False
    assert len(checks["tags_unlinkable"]["failing_leaves"]) == 16


def test_audit_warns_below_minimum_anonymity(bundle_file):
    code, out = run("audit", bundle_file, "--min-anonymity", "64", "--json")
    assert code == 0
    assert "below the minimum of 64" in json.loads(out)["warnings"][0]


def test_audit_flags_uneven_openings(bundle_file, small_epoch, tmp_path):
    sealed = {"0x" + t.hex(): "0x" + s.hex() for t, s in small_epoch.sealed.items()}
    first = next(iter(sealed))
    sealed[first] += "00"
    openings = tmp_path / "openings.json"
    openings.write_text(json.dumps(sealed))
    code, out = run("audit", bundle_file, "--openings", openings, "--json")
    assert code == 1
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["sealed_openings"]["ok"] is False


def test_real_entry_point(bundle_file):
    proc = subprocess.run([sys.executable, "-m", "verifier", "bundle", str(bundle_file),
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True
    proc = subprocess.run([sys.executable, "-m", "verifier", "bundle", "/nonexistent"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_audit_flags_a_tag_repeated_within_the_epoch(tmp_path, small_bundle_json):
    data = copy.deepcopy(small_bundle_json)
    data["leaves"][6] = copy.deepcopy(data["leaves"][2])
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(data))
    code, out = run("audit", path, "--json")
    assert code == 1
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["tags_unlinkable"]["failing_leaves"] == [6]
