"""Every command's shape: shortcuts set config fields, required fields and bad values fail
naming the field with exit status 2, --help exits 0."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

COMMAND = textwrap.dedent('''
    """A test command."""
    import json
    import ml_collections
    from common import checks, cli

    def default_config():
        c = ml_collections.ConfigDict()
        c.output_dir, c.steps, c.inputs = "", 3, []
        return c

    def main(config, rest):
        checks.require(config.steps >= 1, "steps", "must be >= 1", config.steps)
        print(json.dumps({"output_dir": config.output_dir, "steps": config.steps,
                          "inputs": list(config.inputs), "rest": rest}))

    cli.run(main, doc=__doc__, default_config=default_config,
            shortcuts=[cli.Shortcut("output", "output_dir", "Where outputs go.", deprecated=("output_dir",)),
                       cli.Shortcut("input", "inputs", "An input.", multi=True)],
            required=["output_dir"])
''')


@pytest.fixture
def command(tmp_path):
    path = tmp_path / "command.py"
    path.write_text(COMMAND)

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this checkout's common/

    def run(*args):
        return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, env=env)

    return run


def test_shortcuts_and_overrides_set_config_fields(command):
    import json

    out = command("--output=o", "--input=a", "--input", "b", "--config.steps=5")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"output_dir": "o", "steps": 5, "inputs": ["a", "b"], "rest": []}


def test_a_deprecated_flag_name_still_works_with_a_line_naming_the_new_one(command):
    import json

    out = command("--output_dir=o")
    assert out.returncode == 0 and json.loads(out.stdout)["output_dir"] == "o", out.stderr
    assert out.stderr.strip() == "command.py: --output_dir is deprecated: use --output"
    both = command("--output_dir=old", "--output=new")  # the current name wins
    assert json.loads(both.stdout)["output_dir"] == "new"


def test_missing_required_field_and_bad_value_name_the_field(command):
    missing = command()
    assert missing.returncode == 2 and "config.output_dir" in missing.stderr
    bad = command("--output=o", "--config.steps=0")
    assert bad.returncode == 2 and "config.steps" in bad.stderr and "got 0" in bad.stderr
    unknown = command("--bogus=1")
    assert unknown.returncode == 2 and "bogus" in unknown.stderr


def test_unknown_field_is_one_line_naming_it(command):
    for flags in (["--config.stepz=1"], ["--output=o", "--config.steps.x=1"]):
        out = command(*flags)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
        field = flags[-1].split("=")[0].removeprefix("--")
        assert lines[0].startswith(f"command.py: {field}: no such config field"), lines
    assert 'Did you mean "steps"' in command("--config.stepz=1").stderr


def test_help_exits_zero_and_lists_the_shortcuts(command):
    out = command("--help")
    assert out.returncode == 0
    assert "A test command." in out.stdout and "--output_dir" in out.stdout
    assert "sets config.output_dir" in out.stdout


FILE_COMMAND = textwrap.dedent("""
    import json
    from common import cli

    def main(config, rest):
        print(json.dumps({"overwrite": config.overwrite, "output": config.output}))

    cli.run(main, doc="A command whose config is a file.", default_config=None,
            shortcuts=[cli.Shortcut("overwrite", help="Replace."), cli.Shortcut("output", help="Where.")])
""")

CONFIG_FILE = textwrap.dedent("""
    import ml_collections

    def get_config():
        return ml_collections.ConfigDict({"overwrite": False, "output": ""})
""")


def test_a_bool_field_is_a_switch_also_when_the_config_file_is_named_on_the_command_line(tmp_path):
    """config_flags loads a --config=FILE only when it parses; the switch must not wait for that
    (it once took a value, swallowing the next flag: `--overwrite --output=o`)."""
    import json

    (tmp_path / "command.py").write_text(FILE_COMMAND)
    (tmp_path / "config.py").write_text(CONFIG_FILE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for args, expected in [
        ([f"--config={tmp_path / 'config.py'}", "--overwrite", "--output=o"], True),
        (["--config", str(tmp_path / "config.py"), "--output=o", "--nooverwrite"], False),
        ([f"--config={tmp_path / 'config.py'}", "--output=o"], False),
    ]:
        out = subprocess.run(
            [sys.executable, str(tmp_path / "command.py"), *args], capture_output=True, text=True, env=env
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"overwrite": expected, "output": "o"}
