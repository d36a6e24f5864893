"""ncmi -> PyTorch: load a checkpoint written by ncmi into the official-named
PyTorch module with load_state_dict(strict=True) and compare outputs.

    /usr/bin/python3 tests/reference/interop_load_ncmi.py abmil WEIGHTS.safetensors CASE.safetensors

CASE holds "x" (the bag), "logits", "z" and "alpha" as ncmi computed them and
metadata d_feat, d_inner, n_class, attn_hidden. Prints the max relative
differences and exits 1 when any exceeds 1e-4 (or the state_dict does not
load strictly). Run by tests/test_interop.c; not a golden generator."""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import st_read  # noqa: E402
import mil_ref_abmil  # noqa: E402


def rel(a, b):
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-6 * max(1.0, np.max(np.abs(b))))))


def main():
    if len(sys.argv) == 1:  # `make golden` runs every script: nothing to generate here
        print("interop_load_ncmi.py: run by tests/test_interop.c (no golden file)")
        return 0
    if len(sys.argv) != 4 or sys.argv[1] != "abmil":
        print(__doc__)
        return 2
    weights, _ = st_read(sys.argv[2])
    case, meta = st_read(sys.argv[3])
    m = mil_ref_abmil.ABMIL(int(meta["d_feat"]), int(meta["d_inner"]), int(meta["n_class"]),
                            attn_hidden=int(meta["attn_hidden"]))
    sd = {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}
    m.load_state_dict(sd, strict=True)  # raises on a missing/unexpected key or a shape mismatch
    m.eval()
    with torch.no_grad():
        x = torch.from_numpy(np.array(case["x"]))
        logits, z, a = m(x)
        alpha = torch.softmax(a, dim=1)
    errs = {"logits": rel(logits, case["logits"]), "z": rel(z, case["z"]),
            "alpha": rel(alpha, case["alpha"])}
    print(" ".join("%s %.3g" % kv for kv in errs.items()))
    return 0 if max(errs.values()) <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
