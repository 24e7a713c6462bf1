"""Proving on Ray sends values and blindings to cluster nodes (issue 12): Ray's TLS settings
are supported, and a Ray head off this machine without them is refused unless the operator
says the network is trusted. (No traffic is sent: the refusal comes before any connection.)"""

import pytest

from prover.config import Settings
from prover.epoch.executor import RayExecutor, RayTls, check_ray_transport
from prover.errors import ConfigError

TLS = RayTls("/etc/zk/ray.crt", "/etc/zk/ray.key", "/etc/zk/ca.crt")


@pytest.mark.parametrize("address", ["10.1.2.3:6379", "ray://ray-head.internal:10001",
                                     "203.0.113.9:6379"])
def test_a_remote_ray_head_without_tls_is_refused(address):
    with pytest.raises(ConfigError, match="Ray TLS is not configured"):
        check_ray_transport(address, None, allow_plaintext=False)
    with pytest.raises(ConfigError):
        RayExecutor(address)  # refused before Ray is even imported
    check_ray_transport(address, TLS, allow_plaintext=False)
    check_ray_transport(address, None, allow_plaintext=True)


@pytest.mark.parametrize("address", ["127.0.0.1:6379", "localhost:6379", "ray://127.0.0.1:1"])
def test_a_ray_head_on_this_machine_needs_no_tls(address):
    check_ray_transport(address, None, allow_plaintext=False)


def test_ray_tls_settings_map_to_rays_environment(monkeypatch, tmp_path):
    assert TLS.environment() == {"RAY_USE_TLS": "1", "RAY_TLS_SERVER_CERT": TLS.cert,
                                 "RAY_TLS_SERVER_KEY": TLS.key, "RAY_TLS_CA_CERT": TLS.ca}
    for name in ("CERT", "KEY", "CA"):
        monkeypatch.setenv(f"ZKMETER_RAY_TLS_{name}_FILE", str(tmp_path / name.lower()))
    assert Settings().ray_tls() == RayTls(str(tmp_path / "cert"), str(tmp_path / "key"),
                                          str(tmp_path / "ca"))
    monkeypatch.delenv("ZKMETER_RAY_TLS_CA_FILE")
    with pytest.raises(ConfigError, match="or none"):
        Settings().ray_tls()
