"""The HTTP edge of fte: verifies webhooks, publishes protobuf events, serves the support form."""
