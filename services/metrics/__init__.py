"""The metrics service: stage-conversion counters for Prometheus and the funnel API for BI tools."""
