"""The gRPC service: servicers, interceptors, health, lifecycle."""
