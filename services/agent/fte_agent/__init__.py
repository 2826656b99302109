"""The agent: the Kafka worker that answers customer messages and the staff-side AgentService."""
