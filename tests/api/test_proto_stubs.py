"""The committed gRPC stubs are exactly what protoc generates from the .proto files."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_up_to_date():
    proc = subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stubs_import_as_the_proto_package():
    from zkmeter.v1 import epoch_pb2, meter_pb2

    assert meter_pb2.DESCRIPTOR.package == "zkmeter.v1"
    assert epoch_pb2.DESCRIPTOR.package == "zkmeter.v1"
    assert set(meter_pb2.DESCRIPTOR.services_by_name) == {"MeterService"}
    assert set(epoch_pb2.DESCRIPTOR.services_by_name) == {"EpochService"}
