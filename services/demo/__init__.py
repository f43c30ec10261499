"""`onefunnel demo`: the whole loop on one machine, with simulated HubSpot and Salesforce traffic."""
