"""Help says what a command or option does: no measurements, no history (those go to
benchmarks/README.md and the commit log)."""

import re

import pytest
import typer
from typer.testing import CliRunner

from normlab import cli

# "took 0.13 s", "2.3-14 s on 2", "1.96 TB/s", "issue 4", "was 180", "(session 2)"
MEASUREMENT_OR_HISTORY = re.compile(
    r"\btook\b|\d(\.\d+)?(-\d+(\.\d+)?)? ?(s|ms|us|TB/s|GB/s) (on|per|vs)\b|"
    r"\bissue \d|\bwas \d|\bsession \d",
    re.IGNORECASE,
)


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):  # a group (typer may bring its own click)
            yield from _commands(command, (*prefix, name))


COMMANDS = list(_commands(typer.main.get_command(cli.app)))


def test_the_walk_reaches_subcommands():
    assert {("bench", "kernels"), ("bench", "loop"), ("run",)} <= set(COMMANDS)


def test_the_pattern_catches_what_help_used_to_carry():
    assert MEASUREMENT_OR_HISTORY.search("the default MLP took 0.13-0.15 s per epoch on 1 thread")
    assert MEASUREMENT_OR_HISTORY.search("vs 2.3-14 s on 2 (2-core CPU shared with other jobs)")
    assert not MEASUREMENT_OR_HISTORY.search("seconds per epoch and their ratio (target <= 1.5)")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_carries_no_measurements_or_history(command):
    result = CliRunner().invoke(cli.app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    found = MEASUREMENT_OR_HISTORY.search(" ".join(result.output.split()))
    assert found is None, f"normlab {' '.join(command)} --help: {found.group(0)!r} in {result.output}"
