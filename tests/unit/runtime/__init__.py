"""Unit tests of the runtime: the pipeline with stand-in sources, journal replay, sd_notify."""
