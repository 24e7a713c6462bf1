"""Transports: gRPC for gateways and operators, HTTP for the public read side."""
