"""Hypothesize: whatever turns a head's examples into a pattern program.

Chat backends (an OpenAI-compatible HTTP server, a local chat model), the offline program search,
and the prompt and reply formats they share.
"""
