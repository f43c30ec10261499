"""Stateful fakes of the SaaS platforms onefunnel talks to, for tests and the demo."""
