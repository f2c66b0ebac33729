"""Scenario `serving`: vLLM's OpenAI-compatible server under load, beside the offline scenario.

A serving job (rule `serve`) starts the server on 127.0.0.1 as a real process (`server`),
drives it with Poisson arrivals or a fixed concurrency from seeded length distributions
(`load`), finds the steady-state window of each run and reduces it to one row per
(rate, trial) (`steady`). `job` runs all of that for one variant; `figures` draws latency and
J/token against request rate.
"""
