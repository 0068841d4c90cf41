"""Mastery Engine: learning events in, an explainable mastery score per student out.

Layers (imports only point downwards):

    functions/*           thin serverless entry points
    mastery.web           HTTP edge: auth, errors, metrics, the function app
    mastery.events        Avro/CloudEvents codec, Kafka adapters, the ingest pipeline
    mastery.store         Redis adapter: key layout and Lua scripts
    mastery.domain        pure scoring model: no I/O, no clock reads
"""

__version__ = "0.1.0"
