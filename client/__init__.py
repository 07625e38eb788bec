"""rillet: a streaming broker for one host, with the Fluvio Python client API."""
