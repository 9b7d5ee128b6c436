"""Workarounds for upstream bugs, one file each, with the upstream issue and a canary test."""
