"""The embedded local stack: real PostgreSQL+pgvector, the Kafka-protocol broker, Envoy and the
services, started as child processes on loopback. `make run` and the test fixtures use it."""
