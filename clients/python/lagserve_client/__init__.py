# lagserve_client: a small Python client for lagserve's gRPC API (proto/lagserve/v1/lagserve.proto).
# Use: from lagserve_client import LagServeClient; LagServeClient("127.0.0.1:50051").complete(prompt="Hi")
from .client import LagServeClient, parse_lagkv
from .lagserve.v1 import lagserve_pb2 as pb

__all__ = ["LagServeClient", "parse_lagkv", "pb"]
__version__ = "0.1.0"
