"""The user's config file (``~/.aiedit/config.toml``, or the path in ``$AIEDIT_CONFIG``): defaults for the CLI, so
every way of starting a command (a terminal, a login service, a host application) agrees on model, device, spool,
port and limits.

Keys are the commands' option names (``--max-seconds`` → ``max_seconds``) and become parser defaults, so every
option any command gains is configurable without touching this file; a flag on the command line always wins.
Top-level keys apply to every command that has the option; a ``[serve]``, ``[edit]``, ``[send]`` or ``[doctor]``
table applies to that command only and overrides the top level::

    model = "tango"            # or a folder; "auto" picks the best model on this machine
    device = "cuda"
    model_dirs = ["/data/models"]   # extra folders `--model auto` and `aiedit models list` look in

    [serve]
    port = 9050
    preload = true

Environment variables the commands read themselves (``AIEDIT_SPOOL``) win over the file's value for that key.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from engine.errors import InputError

CONFIG_ENV = "AIEDIT_CONFIG"
SECTIONS = ("serve", "edit", "send", "doctor", "models")
NOT_OPTIONS = {"model_dirs"}  # read by the engine itself (engine/models/inventory.py), not a command option
ENV_WINS = {"spool": "AIEDIT_SPOOL"}


class ConfigError(InputError):
    """The config file exists but cannot be used (bad TOML, a value of the wrong type): one line, exit 2."""


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or Path.home() / ".aiedit" / "config.toml").expanduser()


def load_config(path: Path | None = None, *, quiet: bool = False) -> dict[str, Any]:
    """The parsed file, ``{}`` when there is none; a broken file raises ConfigError (``{}`` when ``quiet``)."""
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        if quiet:
            return {}
        raise ConfigError(f"config file {path}: {exc}") from None


def _norm(key: str) -> str:
    return key.replace("-", "_")


def _convert(action: argparse.Action, key: str, value: Any, path: Path) -> Any:
    """A TOML value as the option would have parsed it from the command line."""
    def bad(why: str) -> ConfigError:
        return ConfigError(f"config file {path}: {key} = {value!r}: {why}")

    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise bad("expected true or false")
        return value
    many = action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction)
    items = value if isinstance(value, list) else [value]
    if not many and isinstance(value, list):
        raise bad("expected one value, not a list")
    if isinstance(action.nargs, int) and len(items) != action.nargs:
        raise bad(f"expected {action.nargs} values")
    out = []
    for v in items:
        if isinstance(v, dict | list):
            raise bad("expected a plain value")
        try:
            conv = action.type(str(v)) if callable(action.type) else str(v)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise bad(str(exc) or "wrong type") from None
        if action.choices is not None and conv not in action.choices:
            raise bad(f"choose from {', '.join(map(str, action.choices))}")
        out.append(conv)
    return out if many or isinstance(action.nargs, int) else out[0]


def apply_config(parser: argparse.ArgumentParser, command: str, config: dict[str, Any] | None = None,
                 path: Path | None = None) -> dict[str, Any]:
    """Set the file's values as ``parser``'s defaults (top level, then ``[command]``); returns what was applied.

    Top-level keys this command has no option for are skipped (another command may have it); unknown keys in
    the command's own table raise ConfigError, since they can only be typos.
    """
    path = path or config_path()
    config = load_config(path) if config is None else config
    dests = {a.dest: a for a in parser._actions if a.dest not in (argparse.SUPPRESS, "help")}
    own = config.get(command, {})
    if not isinstance(own, dict):
        raise ConfigError(f"config file {path}: [{command}] must be a table")
    unknown = [k for k in own if _norm(k) not in dests]
    if unknown:
        raise ConfigError(f"config file {path}: [{command}] has no option {', '.join(map(repr, unknown))} "
                          f"(known: {', '.join(sorted(dests))})")
    applied: dict[str, Any] = {}
    for scope in ({k: v for k, v in config.items() if not isinstance(v, dict)}, own):
        for key, value in scope.items():
            dest = _norm(key)
            if dest not in dests or (dest in ENV_WINS and os.environ.get(ENV_WINS[dest])):
                continue
            applied[dest] = _convert(dests[dest], key, value, path)
    if applied:
        parser.set_defaults(**applied)
    return applied


def unknown_keys(config: dict[str, Any], parsers: dict[str, argparse.ArgumentParser]) -> list[str]:
    """Top-level keys no command has an option for (for ``aiedit doctor``: probably typos)."""
    known = set(NOT_OPTIONS)
    for p in parsers.values():
        known |= {a.dest for a in p._actions}
    return [k for k, v in config.items()
            if not isinstance(v, dict) and _norm(k) not in known] + [f"[{k}]" for k, v in config.items()
                                                                     if isinstance(v, dict) and k not in SECTIONS]


def fail(exc: ConfigError, prog: str = "aiedit") -> int:
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return 2
