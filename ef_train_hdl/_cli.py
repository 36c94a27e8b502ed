"""Command lines made of one module per subcommand (``bench``, ``report``)."""

import argparse
import importlib
import pkgutil
import sys


def subcommand_main(prog, package, description, argv=None):
    """Parse ``argv`` and run the subcommand module of ``package`` that it names.

    Every non-private submodule of ``package`` with ``add_arguments`` and ``run`` is a
    subcommand named after the module; its docstring's first line is its help.
    """
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    commands = parser.add_subparsers(dest="command", required=True, metavar="WHAT")
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda info: info.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        if not (hasattr(module, "add_arguments") and hasattr(module, "run")):
            continue
        doc = (module.__doc__ or info.name).strip().splitlines()[0]
        sub = commands.add_parser(info.name, help=doc, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    status = args._run(args)
    sys.exit(status or 0)
