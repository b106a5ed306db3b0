"""`geoformer bench attention ...` and `geoformer bench trainer ...`: argument wiring and printing."""

from __future__ import annotations

import argparse
import sys

from geoformer.cliargs import add_data_args, data_sets
from geoformer.errors import GeoformerError


def _add_attention(sub) -> None:
    a = sub.add_parser("attention", help="attention kinds: forward+backward time and memory, ratio to sdpa")
    a.add_argument("--seq", default="128,256,512,1024", help="comma-separated sequence lengths")
    a.add_argument("--kinds", help="comma-separated attention kinds (default: all; sdpa is always measured)")
    a.add_argument("--batch", type=int, default=4, help="batch size")
    a.add_argument("--embd", type=int, default=128, help="n_embd")
    a.add_argument("--heads", type=int, default=4, help="n_head")
    a.add_argument(
        "--repeats", type=int, default=10, help="timed calls per (kind, seq); the median is reported"
    )
    a.add_argument("--warmup", type=int, default=3, help="untimed calls before the timed ones")
    a.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 | float64")
    a.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    a.add_argument(
        "--set-attn",
        action="append",
        default=[],
        metavar="KIND.KEY=VALUE",
        help="an attention kind's option, e.g. --set-attn local.window=16",
    )
    a.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    a.add_argument(
        "--companions",
        help="a kind's reference workloads timed beside it (gauge_kl: floor, pairwise): names, all or none "
        "(default: floor; the explicit pairwise path takes seconds per call)",
    )
    a.add_argument("--out", required=True, help="folder for bench.json, bench.md, bench.png")


def _add_training_bench(sub, name: str, help: str, *, steps: int, warmup: int, repeats_help: str) -> None:
    """A benchmark that times training steps of a run config (preset/config, --set, --data)."""
    p = sub.add_parser(name, help=help)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", default=None, help="a preset from configs/ (default: shakespeare_char)")
    g.add_argument("--config", help="a TOML file with [model], [data], [train] sections")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    add_data_args(p)
    p.add_argument("--steps", type=int, default=steps, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=warmup, help="untimed steps before them")
    p.add_argument("--repeats", type=int, default=3, help=repeats_help)
    p.add_argument("--out", required=True, help="folder for bench.json and bench.md")


def _add_trainer(sub) -> None:
    _add_training_bench(
        sub,
        "trainer",
        "Trainer tokens/s against a minimal hand-written loop (ratio)",
        steps=60,
        warmup=10,
        repeats_help="alternating trainer/hand pairs",
    )


def _add_homotopy(sub) -> None:
    _add_training_bench(
        sub,
        "homotopy",
        "homotopy lr probe overhead, as a ratio to constant lr (same run)",
        steps=200,
        warmup=20,
        repeats_help="alternating rounds over the settings",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``bench`` sub-subcommands (their parsers inherit the parent's one-line usage errors)."""
    sub = p.add_subparsers(dest="bench", required=True, metavar="COMMAND")
    _add_attention(sub)
    _add_trainer(sub)
    _add_homotopy(sub)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_attention(args) -> int:
    from geoformer.bench import attention as A

    settings = A.AttentionBenchSettings(
        seqs=A.parse_seq(args.seq),
        kinds=A.parse_kinds(args.kinds),
        batch=args.batch,
        embd=args.embd,
        heads=args.heads,
        repeats=args.repeats,
        warmup=args.warmup,
        dtype=args.dtype,
        device=args.device,
        options=A.parse_attn_sets(args.set_attn),
        memory=not args.no_memory,
        companions=A.parse_companions(args.companions),
    )
    result = A.run_attention_bench(settings, log=_log)
    out = A.write_outputs(result, args.out)
    print(A.describe(result))
    print(A.format_table(result), end="")
    print(f"-> {out / 'bench.json'}, bench.md, bench.png")
    return 0


def trainer_config(args):
    """The run config from --preset/--config (default preset shakespeare_char), --set and --data."""
    from geoformer import config as C

    preset = args.preset if args.preset or args.config else "shakespeare_char"
    sets = C.parse_sets(args.set) + data_sets(args)
    return C.build_config(C.load_raw(preset, args.config), sets)


def run_trainer(args) -> int:
    from geoformer.bench import trainer_throughput as T

    result = T.run_trainer_bench(
        trainer_config(args), steps=args.steps, warmup=args.warmup, repeats=args.repeats, log=_log
    )
    T.write_outputs(result, args.out)
    print(T.describe(result))
    print(T.format_table(result), end="")
    print(f"-> {args.out}/bench.json, bench.md")
    return 0


def run_homotopy(args) -> int:
    from geoformer.bench import homotopy as H
    from geoformer.bench._common import positive_int

    for name in ("steps", "warmup", "repeats"):
        positive_int(f"--{name}", getattr(args, name))
    result = H.run_homotopy_bench(
        trainer_config(args), steps=args.steps, warmup=args.warmup, repeats=args.repeats, log=_log
    )
    H.write_outputs(result, args.out)
    print(H.format_table(result), end="")
    print(f"-> {args.out}/bench.json, bench.md")
    return 0


def run(args) -> int:
    commands = {"attention": run_attention, "trainer": run_trainer, "homotopy": run_homotopy}
    if args.bench not in commands:
        raise GeoformerError(f"unknown bench {args.bench!r}; known: {', '.join(commands)}")
    return commands[args.bench](args)
