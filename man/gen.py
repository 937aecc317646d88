"""Render a section-1 man page for every console script from its click help (`make man`).

The help text is the one source of truth; this only reshapes it into roff.
"""

import importlib
import inspect
import os
import sys
import tomllib

import click

from meshtools import __version__

HERE = os.path.dirname(os.path.abspath(__file__))


def esc(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line
                     for line in text.splitlines())


def options(command: click.Command, ctx: click.Context) -> list[str]:
    out = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
        if record:
            out += [".TP", f"\\fB{esc(record[0])}\\fR", esc(record[1] or "")]
    return out


def page(name: str, command: click.Command) -> str:
    ctx = click.Context(command, info_name=name)
    lines = [f'.TH {name.upper()} 1 "" "meshtools {__version__}" "meshtools manual"',
             ".SH NAME", f"{esc(name)} \\- {esc(command.get_short_help_str(200))}",
             ".SH SYNOPSIS", f"\\fB{esc(name)}\\fR {esc(' '.join(command.collect_usage_pieces(ctx)))}",
             ".SH DESCRIPTION", esc(inspect.cleandoc(command.help or ""))]
    if isinstance(command, click.Group):
        lines.append(".SH COMMANDS")
        for sub in command.list_commands(ctx):
            subcommand = command.get_command(ctx, sub)
            if subcommand is None or subcommand.hidden:
                continue
            sub_ctx = click.Context(subcommand, info_name=sub, parent=ctx)
            lines += [".TP", f"\\fB{esc(name)} {esc(sub)}\\fR "
                      f"{esc(' '.join(subcommand.collect_usage_pieces(sub_ctx)))}",
                      esc(inspect.cleandoc(subcommand.help or "").split("\n\n")[0])]
            lines += options(subcommand, sub_ctx)
    lines += [".SH OPTIONS", *options(command, ctx)]
    if command.epilog:
        lines += [".SH EXIT STATUS", esc(command.epilog)]
    lines += [".SH SEE ALSO", "\\fBmeshtools\\fR(7)", ""]
    return "\n".join(lines)


def main(out_dir: str = HERE) -> int:
    with open(os.path.join(HERE, "..", "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    for name, target in scripts.items():
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        with open(os.path.join(out_dir, f"{name}.1"), "w") as f:
            f.write(page(name, command))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
