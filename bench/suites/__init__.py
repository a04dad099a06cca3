"""Benchmark suites: every module here holding a module-level ``SUITE`` (a ``bench.framework.Suite``)
is found by ``uc-edge bench list`` / ``uc-edge bench run NAME``. See ``bench/README.md``."""
