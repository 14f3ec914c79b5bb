"""Matrix Application Service protocol layer: inbound HTTP API, outbound client, registration.

This package knows nothing about channels; `bridge` builds on it, never the other way round.
"""
