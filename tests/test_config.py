"""The one configuration mechanism: flags from dataclass fields, --config YAML as their defaults,
the resolved configuration saved and read back."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cvcore.config import ConfigParser, load_yaml, run, save_config
from cvcore.errors import UserError


@dataclass
class Inner:
    loss: str = field(default="mse", metadata={"choices": ["mse", "l1"]})
    """the loss"""
    clip: float = 1.0


@dataclass
class Settings:
    data: str
    """where the data are"""
    epochs: int = 3
    """how many passes"""
    init_from: str | None = field(default=None, metadata={"aliases": ["--pretrained"]})
    columns: list[str] = field(default_factory=list)
    flip: bool = True
    freeze: bool = False
    step: Inner = field(default_factory=Inner)


@dataclass
class Cluster:
    workers: int = 1


def parse(argv):
    parser = ConfigParser(prog="demo")
    parser.add_config(Settings, "settings")
    parser.add_config(Cluster, "cluster")
    parser.add_argument("--output")
    return parser.parse_args(argv)


def test_flags_come_from_fields_with_types_defaults_aliases_and_nesting():
    args = parse(["--data", "d", "--epochs", "5", "--pretrained", "ck", "--columns", "a,b", "--no-flip", "--freeze",
                  "--step.loss", "l1", "--workers", "2", "--output", "o"])  # fmt: skip
    assert args.settings == Settings("d", 5, "ck", ["a", "b"], False, True, Inner("l1", 1.0))
    assert args.cluster == Cluster(2) and args.output == "o"
    assert parse(["--data", "d"]).settings == Settings("d")


def test_help_is_the_field_docstring_with_the_default(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--epochs N how many passes (default 3)" in out and "--step.loss {mse,l1} the loss (default mse)" in out


def test_yaml_sets_defaults_flags_override_and_a_saved_run_reads_back(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: d\nepochs: 7\nstep: {clip: 0.5}\nworkers: 2\n")
    args = parse(["--config", str(config), "--step.loss", "l1"])
    assert args.settings == Settings("d", 7, step=Inner("l1", 0.5)) and args.cluster == Cluster(2)
    save_config(tmp_path / "saved.yaml", args.settings, args.cluster)
    assert parse(["--config", str(tmp_path / "saved.yaml")]).settings == args.settings
    assert load_yaml(tmp_path / "saved.yaml")["workers"] == 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("data: d\ncolour: red\n", "unknown key(s) in"),
        ("data: d\nstep: {lossy: l1}\n", "unknown key(s) in"),
        ("data: d\nepochs: many\n", "epochs must be int"),
    ],
)
def test_bad_yaml_is_one_clear_error(tmp_path, capsys, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        run(parse, ["--config", str(config)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and message in err


def test_a_required_field_is_a_required_flag():
    with pytest.raises(SystemExit):
        parse([])
    with pytest.raises(UserError, match="needs data"):
        from cvcore.config import from_dict

        from_dict(Settings, {})


@dataclass
class Sectioned:
    inner: Inner = field(default_factory=Inner, metadata={"flatten": True})
    name: str = "x"


def test_a_flattened_section_takes_plain_flags_and_stays_a_section_in_yaml(tmp_path):
    parser = ConfigParser(prog="demo")
    parser.add_config(Sectioned, "sectioned")
    config = tmp_path / "c.yaml"
    config.write_text("inner: {clip: 0.5}\n")
    assert parser.parse_args(["--config", str(config), "--loss", "l1"]).sectioned == Sectioned(Inner("l1", 0.5))


def test_a_default_config_file_applies_without_config(tmp_path):
    config = tmp_path / "default.yaml"
    config.write_text("workers: 3\n")
    parser = ConfigParser(prog="demo", default_config=config)
    parser.add_config(Cluster, "cluster")
    assert parser.parse_args([]).cluster == Cluster(3) and parser.parse_args(["--workers", "4"]).cluster == Cluster(4)
