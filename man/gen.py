"""Render a section-1 man page for every console script from its click help (`make man`),
and the generated sections of the hand-written meshtools(7): the dash's KEYS (from its key
table) and SEE ALSO (every command).

The help text and the key table are the one source of truth; this only reshapes them into
roff.
"""

import importlib
import inspect
import os
import sys
import tomllib

import click

from meshtools import __version__

HERE = os.path.dirname(os.path.abspath(__file__))


# Characters an ASCII terminal (man in the C locale) has no glyph for, as groff names them.
GLYPHS = {"…": "...", "↑": "\\[ua]", "↓": "\\[da]", "→": "\\[->]", "←": "\\[<-]",
          "·": "\\[pc]", "✔": "\\[OK]"}


def esc(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    text = "".join(c if c < "\x80" else GLYPHS.get(c, f"\\[u{ord(c):04X}]") for c in text)
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


def splice(text: str, section: list[str], before: str) -> str:
    """text (roff) with the section that section[0] heads replaced by section, or inserted
    before the heading `before` where text has none."""
    lines = text.splitlines()
    if section[0] in lines:
        start = lines.index(section[0])
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(".SH ")),
                   len(lines))
    else:
        start = end = lines.index(before)
    return "\n".join(lines[:start] + section + lines[end:]) + "\n"


def overview(scripts) -> str:
    """meshtools(7) with its generated sections brought up to date."""
    from meshtools.dash.keys import man_section

    with open(os.path.join(HERE, "meshtools.7")) as f:
        text = f.read()
    heading, *keys = man_section(esc)
    keys = [heading, "The dash (\\fBmeshctl dash\\fR) reads these keys; \\fB?\\fR there "
            "lists them.", ".PD 0", *keys, ".PD"]
    see_also = [".SH SEE ALSO", ".ad l", ",\n".join(f"\\fB\\%{esc(name)}\\fR(1)"
                                                   for name in [*scripts, "flock"])]
    return splice(splice(text, keys, ".SH ENVIRONMENT"), see_also, ".SH SEE ALSO")


def main(out_dir: str = HERE) -> int:
    with open(os.path.join(HERE, "..", "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    for name, target in scripts.items():
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        with open(os.path.join(out_dir, f"{name}.1"), "w") as f:
            f.write(page(name, command))
    text = overview(scripts)
    with open(os.path.join(out_dir, "meshtools.7"), "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
