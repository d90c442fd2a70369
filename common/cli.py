"""The one shape of every command: `python -m PACKAGE.MODULE --config=FILE --config.a.b=V
--shortcut=V ...`.

Inputs are config fields; the most used have flag shortcuts (`--output` sets
`config.output_dir`). `--help` prints the command's doc and flags and exits 0. Required
fields that are still empty after the flags are applied stop the command with one line
naming the field and its shortcut, as do `ConfigError`s raised by the command's
validation (exit status 2). Flags are defined inside `run`, never at import, so any two
commands' modules import side by side. Library code logs; only a command's `main` prints.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from common import quiet
from common.checks import ConfigError, get

# Flags defined in these packages (or in the file run as `python -m`, which absl names by
# its path) are the command's own; libraries (absl, Grain, Orbax,
# array_record, ...) define theirs at import, shown by --helpfull only.
PROJECT_PACKAGES = ("common", "data_pipeline", "tokenizer", "mixtures", "evals", "pretrain", "studies")
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS_DIR = os.path.join(PROJECT_ROOT, "configs")


@dataclasses.dataclass(frozen=True)
class Shortcut:
    """`--flag` for `config.<field>`; `multi=True` for a repeatable flag (a list field).
    A bool field's flag is a switch: `--flag`, `--noflag`, `--flag=false`.

    `field` defaults to the flag's own name: `Shortcut("output_dir", help="...")` sets
    `config.output_dir`, `Shortcut("input", "inputs", "...")` sets `config.inputs`.
    One thing has one flag name in every command (`--output`, `--tokenizer`, `--packed_dir`);
    a renamed flag keeps its old spelling in `deprecated`.
    """

    flag: str
    field: str = ""
    help: str = ""
    multi: bool = False
    deprecated: tuple[str, ...] = ()  # older spellings: still accepted, with a line naming `flag`

    def __post_init__(self):
        if not self.help:
            raise ValueError(f"cli.Shortcut({self.flag!r}): help is required")
        if not self.field:
            object.__setattr__(self, "field", self.flag)


def config_path(relative: str) -> str:
    """A file under the project's configs/ (works from any working directory)."""
    return os.path.join(CONFIGS_DIR, relative)


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        node = node[part]
    current = node.get(leaf)
    if isinstance(current, bool) and isinstance(value, str):
        value = value.lower() in ("1", "true", "yes")
    elif isinstance(current, int) and not isinstance(current, bool) and isinstance(value, str):
        value = int(value)
    elif isinstance(current, float) and isinstance(value, str):
        value = float(value)
    with config.unlocked():
        node[leaf] = value


def run(
    main: Callable[[ml_collections.ConfigDict, list[str]], Any],
    *,
    doc: str,
    default_config: str | Callable[[], ml_collections.ConfigDict] | None,
    shortcuts: Sequence[Shortcut] = (),
    required: Sequence[str] = (),
    define_extra_flags: Callable[[], None] | None = None,
    pass_unknown_flags: bool = False,
    argv: Sequence[str] | None = None,
) -> None:
    """Parses flags into the config and calls `main(config, remaining_argv)`.

    `default_config` is a configs/-relative file (`"data/base.py"`), a function returning
    a ConfigDict, or None when `--config` must be given. `pass_unknown_flags` leaves flags
    this command does not define in `remaining_argv` (data prep hands them to Beam).
    """
    argv = list(sys.argv if argv is None else argv)
    try:  # a default config file is read, with its --config.FIELD overrides, right here
        _define(default_config, shortcuts, define_extra_flags, argv)
    except (AttributeError, KeyError) as e:
        _fail_unknown_field(argv, e)
    if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
        print(doc.strip() + "\n")
        print(flags.FLAGS.get_help() if "--helpfull" in argv else _own_flags_help())
        sys.exit(0)

    def parse(args: list[str]) -> list[str]:
        try:
            return flags.FLAGS(args, known_only=pass_unknown_flags)
        except flags.Error as e:
            sys.stderr.write(f"{os.path.basename(args[0])}: {e}\nTry --help.\n")
            sys.exit(2)
        except (AttributeError, KeyError) as e:  # ml_collections: an override of an absent field
            _fail_unknown_field(args, e)

    def app_main(rest: list[str]) -> None:
        quiet.set_verbose(flags.FLAGS.verbose)
        config = flags.FLAGS.config
        if config is None:
            _fail(rest, "--config is required (a file under configs/)")
        for s in shortcuts:
            for old in s.deprecated:
                if flags.FLAGS[old].present:
                    sys.stderr.write(f"{os.path.basename(rest[0])}: --{old} is deprecated: use --{s.flag}\n")
                    if not flags.FLAGS[s.flag].present:
                        flags.FLAGS[s.flag].value = flags.FLAGS[old].value
            value = flags.FLAGS[s.flag].value
            if value not in (None, [], ""):
                _set(config, s.field, list(value) if s.multi else value)
        by_field = {s.field: s.flag for s in shortcuts}
        for field in required:
            if _get_or_none(config, field) in (None, "", [], ()):
                hint = f"--{by_field[field]}=... or " if field in by_field else ""
                _fail(rest, f"config.{field}: required ({hint}--config.{field}=...)")
        try:
            main(config, rest[1:])
        except ConfigError as e:
            _fail(rest, str(e))

    app.run(app_main, argv=argv, flags_parser=parse)


def _config_named_in(argv: Sequence[str]) -> ml_collections.ConfigDict | None:
    """The config of a `--config=FILE` on the command line, which config_flags loads only when
    it parses (the flag's value is None before): its fields' types decide which shortcuts are
    switches. None when there is none, or it does not load (parsing then says why)."""
    args = list(argv[1:])
    for i, arg in enumerate(args):
        path = arg.removeprefix("--config=") if arg.startswith("--config=") else None
        if arg == "--config" and i + 1 < len(args):
            path = args[i + 1]
        if path:
            try:
                return flags.FLAGS["config"].parser.parse(path)
            except Exception:  # the real parse reports it
                return None
    return None


def _get_or_none(config: ml_collections.ConfigDict, field: str) -> Any:
    """The field's value; None when absent (a shortcut may add a field the file lacks)."""
    try:
        return get(config, field)
    except KeyError:
        return None


def _unknown_field(argv: list[str], error: Exception) -> str | None:
    """The line for a `--config.a.b=V` naming a field the config lacks; None when no
    override is at fault (the config file itself is: its traceback is the message).

    ml_collections raises AttributeError or KeyError with the missing key (maybe with a
    "Did you mean" line), or a message naming the path it looked up.
    """
    while error.args and isinstance(error.args[0], Exception):
        error = error.args[0]
    text, *hint = str(error.args[0] if error.args else error).split("\n")
    for arg in argv[1:]:
        name = arg.split("=", 1)[0].removeprefix("--")
        path = name.removeprefix("config.")
        if name.startswith("config.") and (text.strip("'\"") in path.split(".") or f": {path}" in text):
            return " ".join([f"{name}: no such config field ({arg})", *hint])
    return None


def _fail_unknown_field(argv: list[str], error: Exception) -> None:
    line = _unknown_field(argv, error)
    if line is None:
        raise error
    _fail(argv, line)


def _own_flags_help() -> str:
    """Help for this command's flags, without absl's and the libraries' own."""
    own = [
        flags.FLAGS.module_help(name)
        for name in flags.FLAGS.flags_by_module_dict()
        if name.startswith(PROJECT_ROOT + os.sep) or name.split(".")[0] in PROJECT_PACKAGES
    ]
    return "\n".join(own) + "\n\n--helpfull lists every flag."


def _fail(argv: list[str], message: str) -> None:
    sys.stderr.write(f"{os.path.basename(argv[0]) if argv else 'command'}: {message}\n")
    sys.exit(2)


def _define(
    default_config,
    shortcuts: Sequence[Shortcut],
    define_extra_flags: Callable[[], None] | None,
    argv: Sequence[str],
) -> None:
    if "config" in flags.FLAGS:
        return
    if callable(default_config):
        config_flags.DEFINE_config_dict("config", default_config(), "Config; --config.FIELD=VALUE.")
    else:
        path = config_path(default_config) if default_config else None
        config_flags.DEFINE_config_file(
            "config", path, "Config file (configs/...py); --config.FIELD=VALUE overrides a field."
        )
    flags.DEFINE_bool("verbose", False, "Show the libraries' INFO logs too (Orbax, Grain, Beam, ...).")
    defaults = flags.FLAGS["config"].value or _config_named_in(argv)
    for s in shortcuts:
        text = f"{s.help} (sets config.{s.field})"
        for name, help_text in [(s.flag, text)] + [
            (old, f"deprecated: use --{s.flag}") for old in s.deprecated
        ]:
            if s.multi:
                flags.DEFINE_multi_string(name, [], help_text)
            elif defaults is not None and isinstance(_get_or_none(defaults, s.field), bool):
                flags.DEFINE_bool(name, None, help_text)
            else:
                flags.DEFINE_string(name, None, help_text)
    if define_extra_flags:
        define_extra_flags()
