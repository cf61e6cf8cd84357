"""Generated protobuf and gRPC stubs of the `styleloop.v1` package (`make protos`; never edit)."""
