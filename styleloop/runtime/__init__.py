"""Runtime shared by every service: settings, logging, errors, metrics, gRPC bootstrap."""
