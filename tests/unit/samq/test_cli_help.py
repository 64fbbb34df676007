"""The command line itself: every command and option explains itself."""

from __future__ import annotations

import argparse

from samq.cli import build_parser


def test_every_command_and_option_has_help() -> None:
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    assert set(helps) == set(commands.choices) and all(helps.values()), helps
    missing = [
        f"samq {name} {'/'.join(action.option_strings) or action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert not missing, missing
    assert {"ls", "get", "view", "cancel", "samples"} <= set(commands.choices)
