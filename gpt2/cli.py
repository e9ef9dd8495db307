"""The `gpt2lab` command: a small registry of subcommands, each imported only when it runs.

Adding a subcommand is one line in COMMANDS: name -> (target, help). The target is "package.module" (which
must define `add_arguments(parser)` and `run(args) -> int`) or "package.module:add_fn,run_fn" to name the
two functions. `gpt2lab --help` imports none of them (no torch), so it answers at once.

Errors a user can fix (bad argument, missing file) end with ONE line on stderr and exit code 2: a command
raises CommandError (or argparse rejects an argument) and `main` prints it. No tracebacks for those.
"""
from __future__ import annotations

import argparse
import importlib
import math
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("gpt2lab.gpt2.train", "train a GPT-2 on Shakespeare or your own text"),
    "generate": ("gpt2lab.gpt2.cli:add_generate_arguments,run_generate", "sample text from a checkpoint"),
    "verify": ("gpt2lab.kernels.verify_cli", "check every numba kernel against PyTorch"),
    "bench": ("gpt2lab.gpt2.bench_cli", "time the numba kernels against PyTorch"),
}


class CommandError(Exception):
    """A mistake the user can fix; `main` prints it as one line and exits with code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (not usage + error) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an int > 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0 (0 usually means "never")."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def finite_float(text: str) -> float:
    """argparse type: a finite float (not nan, not inf)."""
    v = _float(text)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return v


def finite_non_negative_float(text: str) -> float:
    """argparse type: a finite float >= 0 (0 usually means "off")."""
    v = finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return v


def _resolve(name: str):
    """(add_arguments, run) of a registered command, imported now. Raises CommandError if it is missing."""
    target = COMMANDS[name][0]
    module_name, _, funcs = target.partition(":")
    add_name, run_name = (funcs.split(",") if funcs else ("add_arguments", "run"))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise CommandError(f"not available yet: module {module_name} is not part of this install") from None
        raise
    return getattr(module, add_name), getattr(module, run_name)


def build_parser(command: str | None = None) -> tuple[Parser, dict]:
    """The top parser; only `command`'s module is imported to fill in its arguments.

    Returns the parser and {command: run function} for the commands that were resolved.
    """
    parser = Parser(prog="gpt2lab", description="Learn GPT-2 from the inside: train, sample, verify kernels.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    runs = {}
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            add_arguments, runs[name] = _resolve(name)
            add_arguments(p)
    return parser, runs


def _first_command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `gpt2lab`. Returns the exit code (0 ok, 2 usage error, 130 interrupted; `gpt2lab train`
    adds 3 parity mismatch, 4 nan/inf loss, 143 SIGTERM: see its --help)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _first_command(argv)
    try:
        parser, runs = build_parser(command if command in COMMANDS else None)
    except CommandError as e:
        print(f"gpt2lab {command}: error: {e}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(runs[args.command](args) or 0)
    except CommandError as e:
        print(f"gpt2lab {args.command}: error: {e}", file=sys.stderr)
        return 2


# ---- gpt2lab generate ----

def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint file (latest.pt or a ckpt_NNNNNN.pt frame)")
    p.add_argument("--prompt", default="", help="text to continue (empty: start from <|endoftext|>)")
    p.add_argument("--tokens", type=positive_int, default=100, help="how many tokens to generate")
    p.add_argument("--temperature", type=finite_non_negative_float, default=0.8,
                   help="softmax temperature; 0 = greedy")
    p.add_argument("--top-k", type=positive_int, default=200, help="sample among the k most likely tokens")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")


def run_generate(args) -> int:
    """Print the prompt and its continuation sampled from the checkpoint's model."""
    from pathlib import Path

    if not Path(args.ckpt).is_file():
        raise CommandError(f"no such checkpoint: {args.ckpt!r}")
    import torch

    from gpt2lab.datasets import EOT_ID, gpt2_encoding

    from .checkpoint import load_model
    try:
        model, ckpt = load_model(args.ckpt)
    except ValueError as e:
        raise CommandError(str(e)) from None
    enc = gpt2_encoding()
    ids = enc.encode_ordinary(args.prompt) if args.prompt else [EOT_ID]
    if max(ids) >= model.config.vocab_size:
        raise CommandError(f"the prompt has token ids up to {max(ids)}, beyond this model's vocab_size "
                           f"{model.config.vocab_size}")
    idx = torch.tensor([ids], dtype=torch.long)
    out = model.generate(idx, args.tokens, temperature=args.temperature, top_k=args.top_k,
                         generator=torch.Generator().manual_seed(args.seed))
    new = out[0, len(ids):].tolist()
    print(args.prompt + enc.decode(new))
    return 0


if __name__ == "__main__":
    # `python -m gpt2lab.gpt2.cli` runs this file as __main__, whose CommandError is not the class the commands
    # import and raise: main must come from the module itself, or a user error would end in a traceback
    from gpt2lab.gpt2.cli import main as package_main
    sys.exit(package_main())
