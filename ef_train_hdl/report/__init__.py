"""Open-synthesis reports: ``python -m ef_train_hdl.report <what>``.

Each submodule is one report with ``add_arguments(parser)`` and ``run(args)``, found by
``__main__`` by itself.
"""
