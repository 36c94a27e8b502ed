"""Benchmarks that print their figures: ``python -m ef_train_hdl.bench <what>``.

Each submodule is one benchmark. It has a docstring (its first line is the help text) and two
functions, ``add_arguments(parser)`` and ``run(args)``; ``__main__`` finds them by itself, so a
new benchmark is a new file. Benchmarks report cycle counts and ratios, which do not change from
run to run, and label wall-clock figures as such.
"""
