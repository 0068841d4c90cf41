"""Dev tooling: the local stack (``mastery dev``), its servers, KafkaSource and gateway.

Used by the CLI, the tests and the benchmarks; no function or runtime module imports it
(``tests/unit/test_dev_tooling.py``). ``servers`` wants the ``local`` extra (Tansu).
"""
