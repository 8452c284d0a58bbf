"""Talking to FHIR servers: the REST client, its authentication and Bulk Data export."""
