"""Automating head categorisation: examples → prompt → hypothesizer → sandbox → validation."""

from __future__ import annotations
