"""TLS and mutual TLS on the gRPC server, with certificates made by openssl for the test."""

import shutil
import subprocess

import grpc
import pytest

from prover.api.grpc_server import TlsFiles, hash_api_key, new_api_key
from prover.app import build_services
from prover.config import Settings
from tests.accounts import enroll
from tests.api.grpc_harness import ServerThread
from zkmeter.client import Client

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="openssl is needed to make test certificates")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1/localhost, and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=zkmeter test CA", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN=zkmeter {name}", cwd=d)
        extra = ["-extfile", "server.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *extra, cwd=d)
    return d


@pytest.fixture()
def services(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'tls.sqlite'}",
                        signing_key="5a" + "".join(f"{i:02x}" for i in range(40, 71)))
    services = build_services(settings)
    enroll(services.meter.ledger.engine, services.meter.provider_id, ["t"])
    yield services
    services.close()


def record(target, key, credentials):
    with Client(target, api_key=key, credentials=credentials, timeout=10) as zk:
        return zk.record_usage(idempotency_key=new_api_key(), user_id="t", model="gpt-4o",
                               input_tokens=1, output_tokens=1)


def test_tls(pki, services):
    key = new_api_key()
    server = ServerThread(services, api_key_hashes=[hash_api_key(key)],
                          tls=TlsFiles(pki / "server.pem", pki / "server.key"))
    try:
        trusted = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
        assert record(server.target, key, trusted).receipt.sequence == 1
        with pytest.raises(grpc.RpcError) as err:  # plaintext against a TLS port
            record(server.target, key, None)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


def test_mutual_tls_requires_a_client_certificate(pki, services):
    key = new_api_key()
    server = ServerThread(services, api_key_hashes=[hash_api_key(key)],
                          tls=TlsFiles(pki / "server.pem", pki / "server.key", pki / "ca.pem"))
    try:
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.pem").read_bytes(),
            private_key=(pki / "client.key").read_bytes(),
            certificate_chain=(pki / "client.pem").read_bytes())
        assert record(server.target, key, with_cert).receipt.sequence == 1
        without = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
        with pytest.raises(grpc.RpcError) as err:
            record(server.target, key, without)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()
