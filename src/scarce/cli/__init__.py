"""The ``scarce`` command: a thin layer over the Python API.

Each part of the toolkit registers its own sub-commands (``register(subparsers)`` in a module of this
package), so the parser is assembled here and nowhere else knows about argparse.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
from pathlib import Path

from scarce.errors import ConfigError, ScarceError

# Commands that split their work over the processes of a torchrun job (docs/scaling.md); the others refuse one.
TORCHRUN_COMMANDS = ("run", "train", "cam", "stage", "masks", "demo", "cil run")
# Modules that contribute sub-commands, in the order they appear in --help.
COMMAND_MODULES = ("scarce.cli.wsss", "scarce.cli.localization", "scarce.cli.cil", "scarce.cli.recurseed")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet``, the one switch for progress bars in every command (they are on by default)."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_run_arguments(parser: argparse.ArgumentParser, configs: str = "configs/") -> None:
    """A run command's arguments: the YAML config, the run folder, --resume, --set overrides and --quiet."""
    parser.add_argument("config", type=Path, help=f"YAML config (see {configs})")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    add_quiet(parser)


def add_optional_config(parser: argparse.ArgumentParser, text: str) -> None:
    """An optional YAML config, positional as in every command; ``--config FILE`` is still read (deprecated)."""
    parser.add_argument("config", type=Path, nargs="?", help=text)
    parser.add_argument("--config", dest="config_option", type=Path, help=argparse.SUPPRESS)


def optional_config(args: argparse.Namespace) -> Path | None:
    """The config given positionally or by the deprecated ``--config``; both at once is an error."""
    if args.config_option is None:
        return args.config
    if args.config is not None:
        raise ConfigError("give the config once: positionally (--config is its old, deprecated spelling)")
    print(f"scarce {args.command}: --config is deprecated; give the config positionally: "
          f"scarce {args.command} {args.config_option}", file=sys.stderr)
    return args.config_option


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scarce", description="Visual recognition when labels are scarce.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that part of the toolkit is not installed in this build
                continue
            raise
        module.register(sub)
    return parser


def _version() -> str:
    from scarce import __version__

    return f"scarce {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from scarce import distributed

    who = f"scarce {args.command}"
    if distributed.restart_count() and getattr(args, "resume", None) is False:
        args.resume = True  # torchrun restarted the job after a process died: continue from the checkpoints
    try:
        with distributed.session() as ranks:
            who += f" (rank {ranks.rank} of {ranks.size})" if ranks.size > 1 else ""
            name = " ".join(filter(None, [args.command, getattr(args, "cil_command", None)]))
            if ranks.size > 1 and name not in TORCHRUN_COMMANDS:
                raise ConfigError(f"scarce {name} runs in one process; start it without torchrun (torchrun runs: "
                                  f"{', '.join(f'scarce {c}' for c in TORCHRUN_COMMANDS)})")
            # rank 0 prints the summary; the others' errors still reach stderr
            with contextlib.nullcontext() if ranks.is_main else contextlib.redirect_stdout(io.StringIO()):
                result = args.func(args)
    except ScarceError as exc:
        print(f"{who}: error: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        if not distributed.lost_peer(exc):
            raise
        # another rank of the job stopped; its own error is in its output
        print(f"{who}: error: lost contact with another process of the job ({str(exc).strip().splitlines()[0]}); "
              "its own error is reported above. Completed outputs and the last checkpoint are kept: run the same "
              "command with --resume (torchrun --max-restarts K does so by itself)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{who}: interrupted; completed outputs and checkpoints are kept", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
