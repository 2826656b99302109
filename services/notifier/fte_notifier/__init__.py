"""NotifierService: outbound delivery on every channel through a transactional outbox."""
