"""The sync service: one canonical lifecycle per lead, reconciled across CRM and marketing automation."""
