"""Decisions over the kernel table: health results in, kernel ops out; owns no event loop."""
