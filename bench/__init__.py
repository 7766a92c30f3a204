"""Benchmarks of mailwatch against its raw limits: see docs/benchmarks.md."""
