"""One configuration mechanism for every command: typed dataclasses, flags generated from them,
`--config YAML` setting the defaults, and the resolved configuration saved with each run.

    parser = ConfigParser(prog="python -m ray_jobs.train", description="...")
    parser.add_config(TrainConfig, "train")          # one flag per field (nested: --step.loss)
    parser.add_argument("--data", required=True)     # ordinary flags live beside them
    args = parser.parse_args(argv)                   # args.train is a checked TrainConfig
    save_config(output / CONFIG_FILE, args.train)    # python -m ... --config OUTPUT/config.yaml repeats it

A field's flag is `--field-name` (underscores become dashes). Its type and default come from the
annotation and the default; its help from the field's docstring (a string right below it) or
`metadata={"help": ...}`. Other metadata keys: `aliases` (more flag names), `choices`, `type` (an
argparse type function), `metavar`, `flag` (False: set in YAML only), `flatten` (a nested
dataclass whose flags drop the `section.` prefix). A field without a default is a required flag
unless the YAML sets it. YAML keys are the field names; a nested dataclass is a mapping; keys of
every dataclass a command registers share the one file, and unknown keys are refused by name.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cvcore.errors import UserError

T = TypeVar("T")
CONFIG_FILE = "config.yaml"
"""Where a run keeps its resolved configuration, in its output folder."""


# ---------------------------------------------------------------- dataclasses from dicts and YAML


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a (nested) dict, naming any unknown key."""
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"unknown key(s) in {where}: {', '.join(unknown)}; valid keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = value if isinstance(value, hint) else from_dict(hint, value or {}, f"{where}.{name}")
        else:
            values[name] = _checked(value, hint, f"{where}.{name}")
    missing = [f.name for f in fields.values() if f.name not in values and _required(f)]
    if missing:
        raise UserError(f"{where} needs {', '.join(missing)}")
    return cls(**values)


def _checked(value: Any, hint: Any, where: str) -> Any:
    """Scalars must have their declared type (an int is a fine float); other hints pass as given."""
    hint = _scalar(hint) if value is not None else hint
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise UserError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def _scalar(hint: Any) -> Any:
    """`int | None` -> int; other hints as they are."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        return options[0] if len(options) == 1 else hint
    return hint


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of settings")
    return data


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(path: str | os.PathLike, *configs: Any, header: str = "") -> None:
    """Write the dataclasses `configs` as one flat YAML file that `--config` of the same command reads back."""
    merged: dict[str, Any] = {}
    for config in configs:
        merged.update(dataclasses.asdict(config))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(header + yaml.safe_dump(merged, sort_keys=False))


# ---------------------------------------------------------------- flags from dataclasses


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring: the string literal right below its annotation in the class body."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError, IndexError, AttributeError):
            continue
        for node, after in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
                    docs[node.target.id] = " ".join(after.value.value.split())
    return docs


class ConfigParser(argparse.ArgumentParser):
    """An ArgumentParser that adds a flag per dataclass field and a `--config YAML` for their defaults.

    After `parse_args`, the namespace holds each registered dataclass, built and type-checked, under
    the name given to `add_config`; flags override the YAML (`default_config` when no --config is
    given), which overrides the field defaults.
    """

    def __init__(self, *args: Any, default_config: str | os.PathLike | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.default_config = default_config
        self._configs: list[tuple[type, str, dict[str, str], Callable[[dict[str, Any]], dict[str, Any]] | None]] = []
        self._required: dict[str, str] = {}  # argparse dest -> YAML key of the fields without a default
        self.add_argument("--config", metavar="YAML", help="YAML file setting the defaults of the flags below (keys: their names "
                          "with underscores; nested settings as mappings); flags override it. A run saves its resolved one as "
                          f"OUTPUT/{CONFIG_FILE}")  # fmt: skip

    def add_config(
        self,
        cls: type,
        dest: str,
        *,
        exclude: Sequence[str] = (),
        complete: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """Flags for every field of `cls` but `exclude`; `complete` may fill in settings (given ones in,
        all to build with out) before the dataclass is built."""
        flags: dict[str, str] = {}  # argparse dest -> dotted field name
        self._add_fields(cls, "", "", exclude, flags)
        self._configs.append((cls, dest, flags, complete))

    def _add_fields(self, cls: type, prefix: str, path: str, exclude: Sequence[str], flags: dict[str, str]) -> None:
        """Flags `--{prefix}{field}` for the fields of `cls`, which sits at `path` in the settings."""
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        group = self.add_argument_group(f"{cls.__name__} settings" + (f" ({prefix.rstrip('.')})" if prefix else ""))
        for field in dataclasses.fields(cls):
            meta = field.metadata
            if field.name in exclude or meta.get("flag") is False:
                continue
            hint = hints[field.name]
            if dataclasses.is_dataclass(hint):
                self._add_fields(hint, "" if meta.get("flatten") else f"{prefix}{field.name}.", f"{path}{field.name}.", (), flags)
                continue
            dotted = path + field.name
            dest = "config__" + dotted.replace(".", "__")
            flags[dest] = dotted
            names = [f"--{prefix}{field.name.replace('_', '-')}", *meta.get("aliases", ())]
            text = meta.get("help") or docs.get(field.name, "")
            kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
            if _required(field):
                kwargs["required"] = True
                self._required[dest] = field.name
            else:
                default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
                shown = "none" if default in (None, "") else ",".join(default) if isinstance(default, list) else default
                if "(default" not in text and default is not False:
                    text = f"{text} (default {shown})"
            kind = _scalar(hint)
            if kind is bool:
                kwargs["action"] = argparse.BooleanOptionalAction if field.default else "store_true"
            else:
                kwargs["type"] = meta.get("type") or (_comma_list if _is_list(kind) else kind if kind in (int, float) else str)
                kwargs["metavar"] = meta.get("metavar") or {int: "N", float: "X"}.get(kind) or field.name.upper().split("_")[-1]
                if "choices" in meta:
                    kwargs["choices"] = meta["choices"]
                    kwargs.pop("metavar")
            group.add_argument(*names, help=text.replace("%", "%%"), **kwargs)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config")
        known, _ = pre.parse_known_args(argv)
        known.config = known.config or (self.default_config and str(self.default_config))
        from_file = load_yaml(known.config) if known.config else {}
        self._check_keys(from_file, known.config)
        for action in self._actions:  # a required setting the YAML gives is no longer a required flag
            if action.dest in self._required:
                action.required = self._required[action.dest] not in from_file
        parsed = super().parse_args(argv, namespace)
        for cls, dest, flags, complete in self._configs:
            names = {f.name for f in dataclasses.fields(cls)}
            given = {k: v for k, v in from_file.items() if k in names}
            for flag_dest, dotted in flags.items():
                if hasattr(parsed, flag_dest):
                    _set_dotted(given, dotted, getattr(parsed, flag_dest))
                    delattr(parsed, flag_dest)
            if complete:
                given = complete(given)
            setattr(parsed, dest, from_dict(cls, given, known.config or "settings"))
        return parsed

    def _check_keys(self, data: dict[str, Any], path: str | None) -> None:
        valid = [f.name for cls, *_ in self._configs for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise UserError(f"unknown key(s) in {path}: {', '.join(unknown)}; valid keys: {', '.join(valid)}")


def _is_list(hint: Any) -> bool:
    return typing.get_origin(hint) is list or (
        (isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union)
        and any(typing.get_origin(h) is list for h in typing.get_args(hint))
    )


def _comma_list(text: str) -> list[str]:
    """argparse type: a comma-separated list (`all` and other single words stay a list of one)."""
    return [item for item in text.split(",") if item]


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[leaf] = value


# ---------------------------------------------------------------- running a command


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run `main(argv)` and exit with its status; user errors become one clear line, not a traceback."""
    try:
        status = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: a count of at least 1, with a one-line message otherwise."""
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def frame_size(text: str) -> tuple[int, int]:
    """argparse type: WIDTHxHEIGHT of rendered images, each side 16 to 4096 pixels."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 674x506, got {text!r}") from None
    if not (16 <= width <= 4096 and 16 <= height <= 4096):
        raise argparse.ArgumentTypeError(f"each side must be between 16 and 4096 pixels, got {text!r}")
    return width, height
