"""Connectors: run a sink or a source as a supervised process of the cluster.

Fluvio's connector YAML is read unchanged (``_config.py``); ``rillet connector create``
hands it to the SC, which keeps it and runs it (broker/sc/connectors.py). Write your own::

    from rillet.connectors import sink, source

    @sink("print-sink")
    def show(record, ctx):                 # or async def; batch=True: a list of records
        ctx.log.info("got %s", record.value_string())

    @source("counter")
    def count(ctx):                        # or an async generator
        for i in range(ctx.config.get("count", 10)):
            yield f"{i}"                   # a value, or a (key, value) pair

and name the file in the YAML: ``python: {module: ./my_connectors.py}``.
"""

from ._config import ConnectorConfig, parse_config, parse_secrets_file, redact, resolve_secrets
from ._registry import sink, source
from ._runtime import Context, StopConnector

__all__ = [
    "sink", "source", "Context", "StopConnector", "ConnectorConfig", "parse_config", "parse_secrets_file",
    "resolve_secrets", "redact",
]
