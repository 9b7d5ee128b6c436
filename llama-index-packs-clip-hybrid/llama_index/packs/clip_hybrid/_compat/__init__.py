"""Workarounds for upstream bugs and limits, one file each, with the upstream issue and a canary test."""
