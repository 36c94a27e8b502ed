from .._cli import subcommand_main

subcommand_main("ef_train_hdl.bench", __package__,
                "Benchmarks of ef_train_hdl; each prints its figures.")
