"""Command-line options declared as table rows and added to an argparse group."""


def add_options(group, rows) -> None:
    """Add each row ``(flags, type, default, help[, more keywords])`` to ``group``:
    ``flags`` one string or a tuple of them; type ``bool`` is an on/off switch
    (``store_true``, no default)."""
    for flags, kind, default, text, *more in rows:
        flags = (flags,) if isinstance(flags, str) else flags
        kw = dict(more[0]) if more else {}
        if kind is bool:
            group.add_argument(*flags, action="store_true", help=text, **kw)
        else:
            group.add_argument(*flags, type=kind, default=default, help=text, **kw)


def plus_default(text: str) -> str:
    """A help text followed by the option's default value."""
    return text + " Default: %(default)s"
