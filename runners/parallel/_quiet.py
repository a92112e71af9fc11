"""Importing Keras (and TensorFlow) without the C++ start-up lines they write to stderr: the CLI and its worker
processes keep their promise of one-line errors."""

from __future__ import annotations

import os
import sys

__all__ = ["import_keras_quietly"]


def import_keras_quietly() -> None:
    """Import Keras (and TensorFlow) with the C++ start-up log lines they write to stderr silenced.

    Those lines cannot be turned off by TF_CPP_MIN_LOG_LEVEL in current TensorFlow; without this an error report
    would not be the single line the CLI promises. Python exceptions raised by the import still propagate.
    """
    if "keras" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras

        if keras.config.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery logs (e.g. cuInit without a driver) go here
            tf.get_logger().setLevel("ERROR")  # retracing notices when predicting test sets of several sizes
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
