"""Python client of the fte gRPC APIs. Import a versioned API: `from fte_client import v1`.

A `v1` client keeps working against every `fte.*.v1` contract; a breaking change would be a new
`fte_client.v2` next to it."""
