"""crmlab's built-in blocks: Keras 3 layers written with ``keras.ops`` only, registered through the
``crmlab.blocks`` entry-point group (see :mod:`registry.core` for the contract).

Importing this package does not import Keras; the block modules do.
"""
