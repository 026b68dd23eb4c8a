# Generated gRPC stubs; see clients/python/generate_stubs.sh.
