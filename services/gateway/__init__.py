"""The gateway: the public HTTP/JSON API for mobile apps."""
