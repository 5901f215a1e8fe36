"""`import tfbridge` stays light."""

from __future__ import annotations

import subprocess
import sys


def test_import_tfbridge_loads_no_optional_heavy_package() -> None:
    code = (
        "import sys, tfbridge\n"
        "optional = ('pandas', 'ray', 'torch', 'datasets', 'matplotlib', 'grain', 'polars', 'pyarrow', 'tensorflow',\n"
        "            'keras')\n"
        "heavy = [m for m in optional if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""


def test_public_api_names_are_exported() -> None:
    import tfbridge

    for name in ("infer_spec", "Spec", "keras_inputs", "to_dataset", "pad_batch", "bucket_boundaries", "validate",
                 "inspect", "TfBridgeError", "SpecInferenceError", "SpecMismatchError", "SourceError",
                 "WorkerDiedError"):
        assert name in tfbridge.__all__ and hasattr(tfbridge, name)
