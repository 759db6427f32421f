"""Provides the live runtime: Pipeline (sources -> queue -> watermark merge -> core -> sinks), LiveFeed."""

from __future__ import annotations

from diag.runtime.pipeline import (
    RUNTIME_SOURCE,
    LiveFeed,
    Pipeline,
    PipelineOptions,
    PipelineStats,
    SourceStats,
    build_sources,
    unloadable_sources,
)

__all__ = [
    "RUNTIME_SOURCE",
    "LiveFeed",
    "Pipeline",
    "PipelineOptions",
    "PipelineStats",
    "SourceStats",
    "build_sources",
    "unloadable_sources",
]
