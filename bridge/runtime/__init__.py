"""What every part runs on: configuration, the handler context, the durable outbox, languages, logs, metrics."""
