"""The PE array, tile buffers, address generators, tile engine and store-path post-ops.

Import the blocks from their modules (for example :mod:`ef_train_hdl.core.postops`).
"""
