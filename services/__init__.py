"""onefunnel: one shared funnel for CRM and marketing automation."""
