"""The common options given before the subcommand (`meshctl --home X peers`): where they
are kept and how a subcommand reads them. Its own module, below cli and complete, which
both read them (complete for TAB, before any command runs)."""

import click

UMBRELLA = "meshtools.umbrella"


def or_umbrella(name: str, value, ctx: click.Context | None = None):
    """A common option's value: the subcommand's own when typed on its command line, else
    the umbrella's (given before the subcommand), else its own (from the environment).
    ctx: the subcommand's context, where none is current (TAB completion)."""
    from click.core import ParameterSource

    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None or ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
        return value
    given = ctx.meta.get(UMBRELLA, {})
    return given.get(name, value)
