"""One module per platform: how it signs its webhooks and what its payloads mean."""
