"""TensorFlow and Keras, imported without their start-up lines on stderr.

On some CPUs (AVX-512 with VNNI, e.g. AMD Zen 4/5 and recent Xeons) TensorFlow enables
its oneDNN custom operations by default and says so while it is imported, twice, through
absl before absl's logging is set up:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. ...

TF_CPP_MIN_LOG_LEVEL does not reach those lines (measured with TensorFlow 2.21: it
silences cpu_feature_guard's "This TensorFlow binary is optimized ..." and later
runtime lines, not these). TF_ENABLE_ONEDNN_OPTS=0 does, but it also turns the
operations off, and they make fine-tuning about 35% faster on such a CPU (2.6 against
3.6 training steps/s of the base model here). So the operations stay on and what the
import writes to file descriptor 2 goes to this module's logger at debug level instead.

Every module of the project that needs TensorFlow gets it from `tensorflow_and_keras()`;
nothing imports it at the top of a module that the CLIs load before validating input.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from types import ModuleType

log = logging.getLogger(__name__)


def tensorflow_and_keras() -> tuple[ModuleType, ModuleType]:
    """(tensorflow, keras), imported once, quietly."""
    if "keras" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # runtime INFO and WARNING lines
        _import_quietly()
    import keras
    import tensorflow

    return tensorflow, keras


def _import_quietly() -> None:
    """Import with fd 2 pointed at a temporary file (the lines come from C++, below
    sys.stderr), then log what was written there."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401  (imports tensorflow too)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        for line in captured.read().decode("utf-8", "replace").splitlines():
            if line.strip():
                log.debug("tensorflow: %s", line)
