"""The committed gRPC stubs are what generate_stubs.sh makes from the proto now.

Run: build/venv/bin/python -m pytest clients/python/tests/test_stubs.py
"""
import filecmp
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def test_committed_stubs_match_the_proto(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "STUBS_OUT": str(tmp_path)}
    subprocess.run(["bash", str(HERE / "generate_stubs.sh")], check=True, env=env,
                   capture_output=True)
    committed = HERE / "lagserve_client" / "lagserve" / "v1"
    for name in ["lagserve_pb2.py", "lagserve_pb2.pyi", "lagserve_pb2_grpc.py"]:
        assert filecmp.cmp(tmp_path / "lagserve" / "v1" / name, committed / name, shallow=False), (
            f"{name} is stale: run clients/python/generate_stubs.sh and commit the result")
