"""Command line: thin subcommands that parse, call the library and print.

Input errors (:class:`GeoformerError`) print one line to stderr and exit with status 2; Ctrl-C exits 130
after the trainer's last atomic checkpoint, so nothing already written is lost.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from geoformer.cliargs import add_data_args, data_sets
from geoformer.errors import GeoformerError


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help shows its default (flags and options without a default say nothing)."""

    def _get_help_string(self, action):  # noqa: D102
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (still exit status 2), and help shows defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        sub = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is not None and message.startswith("the following arguments are required") and sub.metavar in message:
            message = f"choose a command: {', '.join(sub.choices)} (`{self.prog} -h` says what each does)"
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", help="a preset name from configs/ (e.g. quick, shakespeare_char)")
    g.add_argument("--config", help="a TOML file with [model], [data], [train] sections")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=3e-4 --set model.attention=local",
    )
    add_data_args(p)


def _config_from_args(args, *, need_source: bool = True):
    from geoformer import config as C

    if args.preset is None and args.config is None:
        if need_source:
            raise GeoformerError("give --preset NAME or --config FILE.toml")
        return None, {}
    raw = C.load_raw(args.preset, args.config)
    sets = C.parse_sets(args.set) + data_sets(args)
    return C.build_config(raw, sets), raw


def cmd_train(args) -> int:
    from geoformer import config as C
    from geoformer.train.trainer import Trainer, prepare_out_dir

    out = Path(args.out)
    if args.resume and args.preset is None and args.config is None:
        saved = out / "config.json"
        if not saved.is_file():
            raise GeoformerError(f"nothing to resume: {saved} does not exist")
        d = C.load_json(saved)  # a hand-edited config.json goes through the same checks as --set
        if not isinstance(d, dict):
            raise GeoformerError(f"{saved} is not a run configuration")
        for k, _ in C.parse_sets(args.set):
            if not k.startswith("train."):
                raise GeoformerError(f"--resume only accepts train.* overrides, got {k}")
        cfg = C.build_config(d, C.parse_sets(args.set))
    else:
        cfg, _ = _config_from_args(args)
    import contextlib

    from geoformer.train import distributed
    from geoformer.train.run_lock import run_lock

    # under torchrun rank 0 holds the folder's lock (every rank writes through it)
    lock = run_lock(out, "train") if distributed.info_from_env().is_main else contextlib.nullcontext()
    created = not out.exists()
    try:
        with lock:
            prepare_out_dir(out, resume=args.resume, force=args.force)
            trainer = Trainer(cfg, out, resume=args.resume, quiet=args.quiet)
            summary = trainer.fit(until=args.until)
    except BaseException:
        # a run that failed before writing anything (bad data, a bad option) leaves no empty --out folder
        if created and out.is_dir() and all(p.name == ".lock" for p in out.iterdir()):
            (out / ".lock").unlink(missing_ok=True)
            out.rmdir()
        raise
    if trainer.is_main:
        print(
            f"done: step {summary['step']}, val loss {summary['final_val_loss']:.4f} "
            f"(best {summary['best_val_loss']:.4f}), {summary['tokens_per_s']:,.0f} tok/s, "
            f"{summary['params']:,} params -> {out}"
        )
    return 0


MAX_SAMPLE_TOKENS = 100_000


def cmd_sample(args) -> int:
    import math

    import torch

    from geoformer.data import load_tokenizer
    from geoformer.train.trainer import load_model

    if not 1 <= args.tokens <= MAX_SAMPLE_TOKENS:
        raise GeoformerError(f"--tokens must be between 1 and {MAX_SAMPLE_TOKENS:,}, got {args.tokens}")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise GeoformerError(f"--temperature must be a positive number, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise GeoformerError(f"--top-k must be >= 1, got {args.top_k}")
    ckpt = Path(args.ckpt)
    if ckpt.is_dir() and not (ckpt / "ckpt.pt").exists() and (ckpt / "runs").is_dir():
        runs = sorted(str(p.parent.relative_to(ckpt)) for p in (ckpt / "runs").glob("*/*/ckpt.pt"))
        listing = ", ".join(runs[:6]) + (f" (+{len(runs) - 6} more)" if len(runs) > 6 else "")
        raise GeoformerError(f"{ckpt} is a comparison, not a run; sample one of its runs: {listing or 'none yet'}")
    model, cfg, _ = load_model(ckpt)
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise GeoformerError(f"the checkpoint in {ckpt} has non-finite weights (the run diverged): nothing to sample")
    ckpt_dir = ckpt if ckpt.is_dir() else ckpt.parent
    tok_path = ckpt_dir / "tokenizer.json"
    if not tok_path.is_file():
        raise GeoformerError(f"no tokenizer.json beside the checkpoint in {ckpt_dir}")
    tok = load_tokenizer(tok_path)
    ids = tok.encode(args.prompt) if args.prompt else [0]
    if not ids:
        raise GeoformerError("the prompt encodes to no tokens")
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.tensor([ids])
    shown = tok.decode(ids)
    sys.stdout.write(shown)
    with torch.no_grad():
        for _ in range(args.tokens):  # one token at a time, printed as it comes (same draws as one generate call)
            idx = model.generate(idx, 1, temperature=args.temperature, top_k=args.top_k, generator=g)
            # a byte-level token may end inside a multi-byte character (decoded as U+FFFD): hold it back until whole
            stable = tok.decode(idx[0].tolist()).rstrip("\ufffd")
            if stable.startswith(shown):
                sys.stdout.write(stable[len(shown) :])
                sys.stdout.flush()
                shown = stable
    text = tok.decode(idx[0].tolist())
    rest = text[len(shown) :] if text.startswith(shown) else ""
    sys.stdout.write(rest + ("" if (shown + rest).endswith("\n") else "\n"))
    return 0


def cmd_compare(args) -> int:
    from geoformer.experiments.parallel import run_compare_parallel

    variants = None
    if args.variants is not None:
        variants = [v for v in args.variants.split(",") if v]
        if not variants:  # "," is not "all": an empty list is a mistake
            raise GeoformerError(f"--variants needs at least one variant name, got {args.variants!r}")
    opts = {}
    for item in args.launcher_opt:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GeoformerError(f"--launcher-opt wants KEY=VALUE, got {item!r}")
        opts[key] = int(value) if value.lstrip("-").isdigit() else value
    run_compare_parallel(
        jobs=args.jobs,
        launcher=args.launcher,
        launcher_opts=opts,
        preset=args.preset,
        config=args.config,
        sets=args.set,
        data=None,
        extra_sets=data_sets(args),  # --data / --include / --exclude
        variants=variants,
        seeds=args.seeds,
        out=Path(args.out),
        force=args.force,
        resume=args.resume,
        quiet=args.quiet,
    )
    return 0


def cmd_bench(args) -> int:
    from geoformer.bench import cli as bench_cli

    return bench_cli.run(args)


def cmd_claims(args) -> int:
    from geoformer.claims import ledger

    if args.stale is not None:
        if args.only or args.quick or args.force or args.merge:
            raise GeoformerError("--stale only reads a ledger: it takes no --only, --quick, --force or --merge")
        rows = ledger.stale_rows(Path(args.stale))
        for rid, why in rows:
            print(f"{rid}: {why}")
        print(f"{len(rows)} stale rows" if rows else "no stale rows: every row was measured at the current code")
        return 1 if rows else 0
    if args.out is None:
        raise GeoformerError("--out DIR is required (or --stale DIR to check a ledger)")
    if args.merge:
        if args.only or args.quick or args.force:
            raise GeoformerError("--merge copies measured rows: it takes no --only, --quick or --force")
        ledger.merge_ledgers(Path(args.out), [Path(d) for d in args.merge])
        return 0
    only = args.only.split(",") if args.only is not None else None
    if args.max_seeds is not None and args.max_seeds < 2:
        raise GeoformerError("--max-seeds must be >= 2 (an interval needs two seeds)")
    if args.jobs != 1:
        from geoformer.claims import parallel
        from geoformer.train.run_lock import run_lock

        selected = ledger._select(only)
        with run_lock(Path(args.out), "claims ledger"):
            folders = parallel.run_parallel(out=Path(args.out), rows=selected, jobs=args.jobs, quick=args.quick,
                                            max_seeds=args.max_seeds, force=args.force)  # fmt: skip
            ledger.merge_ledgers(Path(args.out), [f for f in folders if (f / "claims.json").is_file()])
        return 0
    ledger.run_ledger(
        out=Path(args.out), quick=args.quick, only=only, force=args.force, quiet=args.quiet, max_seeds=args.max_seeds
    )
    return 0


def cmd_arc_eval(args) -> int:
    from geoformer.data import arc as A
    from geoformer.experiments.arc_eval import resolve_ids, run_arc_eval

    if args.tasks is not None and args.ids:
        raise GeoformerError("give --tasks N or --ids ID,... (not both)")
    ids = None
    if args.ids:
        ids = (
            A.read_ids_file(args.ids[1:])
            if args.ids.startswith("@")
            else [i for i in args.ids.split(",") if i]
        )
        if not ids:
            raise GeoformerError("--ids names no task")
    task_ids = resolve_ids(args.dataset, args.split, tasks=args.tasks, ids=ids)
    s = run_arc_eval(
        dataset=args.dataset,
        split=args.split,
        ids=task_ids,
        method=args.method,
        out=Path(args.out),
        steps=args.steps,
        budget_s=args.budget_s,
        budget_cpu_s=args.budget_cpu_s,
        seed=args.seed,
        force=args.force,
        quiet=args.quiet,
        command="geoformer " + " ".join(sys.argv[1:]),
        jobs=args.jobs,
        search_budget_cpu_s=args.search_budget_cpu_s,
    )
    lo, hi = s["wilson95"]
    print(
        f"{args.method}: accuracy {s['accuracy']:.3f} [Wilson 95% {lo:.3f}, {hi:.3f}] on {s['tasks']} tasks "
        f"({s['test_outputs_solved']}/{s['test_outputs']} test outputs), {s['seconds_per_task']:.1f} s/task -> {args.out}"
    )
    return 0


def cmd_arc_show(args) -> int:
    from geoformer.data import arc as A
    from geoformer.experiments.arc_eval import load_prediction
    from geoformer.experiments.arc_render import render_task

    pred = load_prediction(Path(args.pred), args.task_id) if args.pred else None
    if args.dataset is not None:
        A.check_dataset(args.dataset)
    task, ds, split = A.find_task(args.task_id, args.dataset)
    png = Path(args.out) if args.out else Path(f"arc_{args.task_id}.png")
    render_task(task, png, prediction=pred, title=f"{task.id} ({ds} {split})")
    for t, progs in enumerate((pred or {}).get("programs", [])):
        for a, (prog, method) in enumerate(zip(progs, pred["methods"][t], strict=True)):
            print(f"test {t + 1} attempt {a + 1} [{method}]: {prog if prog is not None else '(learner)'}")
    print(f"wrote {png}")
    return 0


def _add_arc_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="arc_cmd", required=True, parser_class=_Parser, metavar="COMMAND")
    e = sub.add_parser("eval", help="solve ARC tasks; writes one JSON per task and summary.json")
    e.add_argument("--dataset", default="arc1", help="arc1 (ARC-AGI-1) | arc2 (ARC-AGI-2)")
    e.add_argument("--split", default="evaluation", help="training | evaluation")
    e.add_argument("--tasks", type=int, default=None, help="a fixed seeded sample of N tasks")
    e.add_argument("--ids", help="comma-separated task ids, or @FILE with one id a line")
    e.add_argument("--method", default="learner", help="learner | identity | mode | search | hybrid")
    e.add_argument("--steps", type=int, default=300, help="training steps per task (deterministic budget)")
    e.add_argument("--budget-s", type=float, default=600.0, help="hard wall-clock cap per task in seconds")
    e.add_argument(
        "--budget-cpu-s", type=float, default=60.0, help="cap per task in CPU seconds of this process"
    )
    e.add_argument(
        "--search-budget-cpu-s", type=float, default=None,
        help="search and hybrid: the search's CPU seconds per task, within --budget-cpu-s (default: all of it "
        "for search, half for hybrid; hybrid's learner gets the rest)",
    )  # fmt: skip
    e.add_argument("--jobs", type=int, default=1,
                   help="solve tasks in this many worker processes, one thread each (same results; default 1)")  # fmt: skip
    e.add_argument("--seed", type=int, default=0, help="learner seed")
    e.add_argument("--out", required=True, help="output folder (one JSON per task, summary.json)")
    e.add_argument("--force", action="store_true", help="re-run tasks whose JSON already exists in --out")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_arc_eval)
    s = sub.add_parser("show", help="render a task (and a prediction) as a PNG")
    s.add_argument("task_id", help="an ARC task id, e.g. 00576224")
    s.add_argument("--dataset", default=None, help="arc1 | arc2 (default: search both)")
    s.add_argument("--pred", help="an `arc eval` output folder")
    s.add_argument("--out", help="PNG path (default: arc_TASK_ID.png)")
    s.set_defaults(func=cmd_arc_show)


def cmd_circuits(args) -> int:
    from geoformer.circuits import continual

    if args.seeds < 1:
        raise GeoformerError("--seeds must be >= 1")
    out = Path(args.out)
    common = {"seeds": args.seeds, "quick": args.quick, "force": args.force, "quiet": args.quiet}
    try:
        seed_ids = [int(v) for v in args.seed_ids.split(",") if v] if args.seed_ids else None
    except ValueError:
        raise GeoformerError(f"--seed-ids must be comma-separated integers, got {args.seed_ids!r}") from None
    if seed_ids is not None and (not seed_ids or min(seed_ids) < 0):
        raise GeoformerError(f"--seed-ids must be non-negative integers, got {args.seed_ids!r}")
    if args.action == "tune":
        from geoformer.circuits import tuning

        knobs = tuple(k for k in args.knobs.split(",") if k)
        tuning.run_tune(out, lr_mults=_lr_mults(args.lr_mults), knobs=knobs, seed=args.tune_seed, quick=args.quick,
                        force=args.force, quiet=args.quiet)  # fmt: skip
    elif args.action == "train":
        continual.run_train(out, seed_ids=seed_ids, **common)
    elif args.action == "attribute":
        models = Path(args.models) if getattr(args, "models", None) else None
        if models is not None and not models.is_dir():
            raise GeoformerError(f"--models {models} is not a folder of trained models (run circuits train first)")
        continual.run_attribute(out, models=models, seed_ids=seed_ids, **common)
    else:
        mults = _lr_mults(args.lr_mults)
        knobs = _read_knobs(Path(args.knobs)) if args.knobs else None
        methods = tuple(m for m in args.methods.split(",") if m)
        unknown = [m for m in methods if m not in continual.METHODS]
        if unknown or not methods:
            raise GeoformerError(
                f"unknown method {unknown[0] if unknown else args.methods!r}; known methods: {', '.join(continual.METHODS)}"
            )
        continual.run_continual(
            out, methods=methods, lr_mults=mults, resume=args.resume, seed_ids=seed_ids, knobs=knobs, **common
        )
    return 0


def _lr_mults(text: str) -> tuple[float, ...]:
    try:
        mults = tuple(float(v) for v in text.split(",") if v)
    except ValueError:
        raise GeoformerError(f"--lr-mults must be comma-separated numbers, got {text!r}") from None
    if not mults or any(not (0 < m < float("inf")) for m in mults):  # also rejects nan
        raise GeoformerError(f"--lr-mults must be positive numbers, got {text!r}")
    return mults


def _read_knobs(path: Path) -> dict:
    """The ``chosen`` values of a `circuits tune` output (its tuned.json, or the folder holding it)."""
    import json

    f = path / "tuned.json" if path.is_dir() else path
    try:
        chosen = json.loads(f.read_text()).get("chosen")
    except (OSError, ValueError, AttributeError) as e:
        raise GeoformerError(f"--knobs {path}: not a `circuits tune` result ({type(e).__name__})") from None
    if not isinstance(chosen, dict) or not all(isinstance(v, dict) for v in chosen.values()):
        raise GeoformerError(f"--knobs {path}: holds no tuned values (run `geoformer circuits tune` first)")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    import geoformer

    p = _Parser(prog="geoformer", description="Structure-aware transformers against a plain GPT baseline.")
    p.add_argument("--version", action="version", version=f"geoformer {geoformer.__version__}")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser, metavar="COMMAND")

    t = sub.add_parser(
        "train", help="train one model; writes config.json, metrics.jsonl, summary.json, ckpt.pt"
    )
    _add_config_args(t)
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--force", action="store_true", help="overwrite a run already in --out")
    t.add_argument("--until", type=int, default=None, help="stop (checkpointed) at this step; resume later")
    t.add_argument("--quiet", action="store_true", help="plain log lines instead of a progress bar")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("compare", help="train variants x seeds on the same data and tokens; write a report")
    _add_config_args(c)
    c.add_argument("--variants", help="comma-separated variant names from the preset (default: all)")
    c.add_argument("--seeds", type=int, default=None, help="number of seeds (none: the preset's)")
    c.add_argument("--out", required=True, help="comparison folder (runs/, results.json, report.*)")
    c.add_argument("--force", action="store_true", help="overwrite an existing comparison in --out")
    c.add_argument("--resume", action="store_true", help="reuse finished runs (same settings) already in --out")
    c.add_argument("--quiet", action="store_true", help="a line per finished run instead of progress bars")
    c.add_argument("--jobs", type=int, default=1,
                   help="train the runs in this many worker processes (same results as 1; default 1); "
                   "with --launcher slurm: at most this many jobs at once")  # fmt: skip
    c.add_argument("--launcher", default="processes",
                   help="processes (this machine) | slurm (one submitit job per run) | local (submitit's local "
                   "executor); default processes")  # fmt: skip
    c.add_argument("--launcher-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a submitit executor option, e.g. slurm_partition=gpu, timeout_min=120, gpus_per_node=1")
    c.set_defaults(func=cmd_compare)

    s = sub.add_parser("sample", help="generate text from a trained run")
    s.add_argument("--ckpt", required=True, help="a run folder (or its ckpt.pt)")
    s.add_argument("--prompt", default="\n", help="text to continue")
    s.add_argument("--tokens", type=int, default=200, help="tokens to generate (at most 100,000)")
    s.add_argument("--temperature", type=float, default=0.8, help="softmax temperature")
    s.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens (none: all tokens)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed")
    s.set_defaults(func=cmd_sample)

    b = sub.add_parser("bench", help="micro-benchmarks (ratios to a baseline measured in the same run)")
    from geoformer.bench import cli as bench_cli

    bench_cli.add_arguments(b)
    b.set_defaults(func=cmd_bench)

    ci = sub.add_parser(
        "circuits", help="capability suites: train a model, attribute heads/neurons, continual learning"
    )
    csub = ci.add_subparsers(dest="action", required=True, parser_class=_Parser, metavar="COMMAND")
    from geoformer.circuits.methods import KNOB_NAMES, METHODS, TUNE_SEED
    helps = {
        "train": "train models on all five capability suites (train.json, seed<N>/ckpt.pt)",
        "attribute": "head / neuron attribution and bridges of trained models (attribution.json, heatmaps)",
        "continual": "suites A then B with each continual-learning method (continual.json, .md, tradeoff.png)",
        "tune": "tune each method's main knob on a held-out tuning seed (tuned.json, for continual --knobs)",
    }
    for action, help_text in helps.items():
        c2 = csub.add_parser(action, help=help_text)
        c2.add_argument("--out", required=True, help="output folder")
        c2.add_argument("--seeds", type=int, default=1, help="number of seeds (continual: use >= 3)")
        c2.add_argument("--seed-ids", help="only these seeds, comma-separated (e.g. to run seeds in parallel)")
        c2.add_argument("--quick", action="store_true", help="small suites and few steps (a smoke run)")
        c2.add_argument("--force", action="store_true", help="overwrite results already in --out")
        c2.add_argument("--quiet", action="store_true", help="no progress bars")
        if action == "attribute":
            c2.add_argument("--models", help="a `circuits train` folder to take the models from")
        if action == "continual":
            c2.add_argument("--resume", action="store_true", help="keep finished rows (same settings), run the rest")
            c2.add_argument("--methods", default=",".join(METHODS),
                            help=f"comma-separated methods (default: all: {', '.join(METHODS)})")  # fmt: skip
            c2.add_argument("--knobs", help="a `circuits tune` folder or tuned.json: the tuned value of each knob")
        if action in ("continual", "tune"):
            c2.add_argument("--lr-mults", default="1", help="phase-B lr multipliers, e.g. 1,10")
        if action == "tune":
            c2.add_argument("--knobs", default=",".join(KNOB_NAMES),
                            help=f"knobs to tune (default: all: {', '.join(KNOB_NAMES)})")  # fmt: skip
            c2.add_argument("--tune-seed", type=int, default=TUNE_SEED, help="the seed tuned on (never reported)")
        c2.set_defaults(func=cmd_circuits)

    cl = sub.add_parser(
        "claims", help="run the claims ledger; writes CLAIMS.md, CLAIMS.html, claims.json and forest.png"
    )
    cl.add_argument("--quick", action="store_true", help="smaller, faster versions of each check (not evidence)")
    cl.add_argument("--only", help="comma-separated claim ids or glob patterns such as 004-* (updates those rows of an existing ledger)")
    cl.add_argument("--out", help="the ledger folder")
    cl.add_argument("--force", action="store_true", help="overwrite a ledger already in --out")
    cl.add_argument("--quiet", action="store_true", help="a line per finished run instead of progress bars")
    cl.add_argument(
        "--jobs", type=int, default=1,
        help="measure the rows in this many processes, grouped by write-up (arena with 004), merged into --out",
    )
    cl.add_argument(
        "--max-seeds", type=int, default=None, help="cap the sequential looks at this many seeds (none: looks at 3, 5, 10 seeds)"
    )
    cl.add_argument(
        "--stale",
        metavar="DIR",
        help="list the rows of the ledger in DIR whose code changed since they were measured (exit 1 if any)",
    )
    cl.add_argument(
        "--merge",
        action="append",
        metavar="DIR",
        help="copy the rows of another ledger (DIR/claims.json) into --out instead of measuring; repeatable",
    )
    cl.set_defaults(func=cmd_claims)

    a = sub.add_parser("arc", help="ARC tasks: evaluate a method (eval) or render a task (show)")
    _add_arc_args(a)

    pl = sub.add_parser("plot", help="figures from finished runs (curves: a comparison's val loss)")
    psub = pl.add_subparsers(dest="plot_cmd", required=True, parser_class=_Parser, metavar="COMMAND")
    pc = psub.add_parser("curves", help="validation-loss curves of a comparison's variants, with reference lines")
    pc.add_argument("--results", required=True, help="a comparison folder (results.json) or the file itself")
    pc.add_argument("--variants", help="comma-separated variants (default: all)")
    pc.add_argument("--reference", action="append", default=[], metavar="VALUE[=LABEL]",
                    help="a horizontal line, e.g. '1.87=nanoGPT train.py'; repeatable")  # fmt: skip
    pc.add_argument("--title", default="", help="figure title")
    pc.add_argument("--out", required=True, help="PNG path")
    pc.set_defaults(func=cmd_plot_curves)
    return p


def cmd_plot_curves(args) -> int:
    from geoformer.config import load_json
    from geoformer.experiments import figures

    path = Path(args.results)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise GeoformerError(f"{args.results} holds no comparison (results.json)")
    results = load_json(path)
    if not isinstance(results, dict) or not isinstance(results.get("variants"), dict):
        raise GeoformerError(f"{path} is not a comparison's results.json")
    variants = [v for v in args.variants.split(",") if v] if args.variants else None
    refs = [figures.parse_reference(r) for r in args.reference]
    out = figures.plot_curves(results, Path(args.out), variants=variants, references=refs, title=args.title)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:  # bare `geoformer`: the command list
        parser.print_help()
        sys.exit(0)
    from geoformer.experiments.pools import EXIT_WITH_PARENT_ENV, exit_with_parent

    if os.environ.get(EXIT_WITH_PARENT_ENV) == "1":  # a `claims --jobs` child: stop when that process dies
        exit_with_parent()
    try:
        code = args.func(args)
    except GeoformerError as e:
        print(f"geoformer: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        code = 2
    except OSError as e:  # a full disk, a read-only folder, ...: the atomic writes left the last good files intact
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"geoformer: error: {e.strerror or e}{where}; files already written are intact", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(
            "geoformer: interrupted; finished checkpoints and results are kept (use --resume)",
            file=sys.stderr,
        )
        code = 130
    except RuntimeError as e:
        if not type(e).__module__.startswith("torch.distributed"):
            raise
        # a peer froze or died: the collective gave up after train.dist_timeout_s (torch's default is 30 minutes)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"geoformer: error: a torch.distributed collective failed ({type(e).__name__}: {first[:160]}); "
              "a rank froze or died; the last checkpoint is intact (--resume)", file=sys.stderr)  # fmt: skip
        code = 2
    finally:
        from geoformer.train import distributed

        distributed.shutdown()
    sys.exit(code)
