"""`geoformer bench ...` argument wiring (filled in by the benchmark module)."""

from __future__ import annotations


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="bench", required=True)
    sub.add_parser("attention", help="attention kinds: forward+backward time and memory, ratio to sdpa")


def run(args) -> int:
    raise NotImplementedError
