"""What every ``python -m ptft_jax.<command>`` shares: a user's mistake is one line, not a trace.

``guarded(main)`` prints a ``UserError`` as ``error: <sentence>`` and exits 2, Ctrl-C before
anything is saved as one line and exit 130, and a full disk as advice. The config-file checks
and the quiet start-up live here too. Standard library only at import (absl and the config are
imported inside the functions that need them): ``bench`` imports this module on
machines that lack the training stack's data libraries.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import errno
import functools
import glob
import pathlib
import re
import sys
from collections.abc import Callable

from ptft_jax import errors


def fail(message: str, status: int = errors.USER_ERROR):
    """Print ``error: <message>`` on standard error and exit with ``status``."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def guarded(main: Callable) -> Callable:
    """``main`` with user errors, Ctrl-C and a full disk turned into one line and an exit status."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except errors.UserError as e:
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted (Ctrl-C) before anything new was saved.", errors.INTERRUPTED)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            fail(
                f"The disk is full ({e.filename or 'writing output'}); free space there or write "
                "to a bigger disk, then run the same command again."
            )

    return wrapper


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage mistakes are one sentence (no usage block) with exit status 2."""

    def error(self, message: str):
        fail(f"{message.rstrip('.')}; see {self.prog} --help.")


def parse_absl_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, an unknown or malformed flag reported in one sentence, exit 2."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        # absl: "Unknown command line flag 'wrkdir'. Did you mean: workdir ?"
        message = re.sub(r"\. Did you mean: (\S+) \?", r" (did you mean --\1?)", str(e))
        command = f"python -m ptft_jax.{pathlib.Path(argv[0]).stem}"
        fail(f"{message[0].lower()}{message[1:].rstrip('.')}; see {command} --help.")


def parse_config_flags(argv: list[str]) -> list[str]:
    """absl parsing for commands with ``--config``: a config file that cannot be used, an
    unknown key or a value of the wrong type is one sentence, before the file runs."""
    from absl import flags

    from ptft_jax import config

    spec = flag_value(argv[1:], "config")
    problem = (config_file_problem(spec) if spec else None) or config.flag_problem(argv[1:])
    if problem is None:
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            problem = config.flag_problem(argv[1:], e)
    fail(problem)


def flag_value(argv: list[str], name: str) -> str | None:
    """The value of ``--name=V`` or ``--name V`` on a command line, if given."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def config_file_problem(spec: str) -> str | None:
    """Why config file ``spec`` (``path.py`` or ``path.py:arg``) cannot be used, or None. It is
    read, never run: a file that does not exist, cannot be parsed or defines no get_config()."""
    path = pathlib.Path(spec)
    if not path.is_file() and ":" in spec:
        path = pathlib.Path(spec.rsplit(":", 1)[0])  # config_flags' "file.py:argument" form
    if not path.is_file():
        there = [pathlib.Path(p).name for p in glob.glob(str(path.parent / "*.py"))]
        near = difflib.get_close_matches(path.name, there, n=1)
        hint = f" (did you mean {path.parent / near[0]}?)" if near else ""
        return f"the config file {spec!r} does not exist{hint}; check the --config path."
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError) as e:
        where = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
        return f"the config file {path} is not valid Python{where}; fix it."
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {alias.asname or alias.name for alias in node.names}
    if "get_config" not in names:
        return f"the config file {path} defines no get_config(); add one that returns the config."
    return None
