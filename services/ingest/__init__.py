"""The ingest service: verified platform webhooks, normalized and durably published to the bus."""
