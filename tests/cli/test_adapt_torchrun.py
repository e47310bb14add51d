"""`torchrun --nproc-per-node 2 -m uda_core.cli adapt ...` end to end on the CPU (gloo): the
same adapted weights as one process with the same global batch (tolerance as in
tests/engine/test_ddp.py), outputs written once."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import blob_volume, write_nifti
from uda_core.models.bundle import load_model


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path, tiny_bundle_path):
    targets = [write_nifti(tmp_path / f"t{i}.nii.gz", blob_volume((22, 26, 9), seed=i))
               for i in range(2)]
    common = ["adapt", "--model", tiny_bundle_path, "--method", "tent", "--device", "cpu",
              "--steps", "3", "--batch-size", "8", "--select-by", "last", *targets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "uda_core.cli", *common, "--out",
                          str(tmp_path / "one")], capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", "-m", "uda_core.cli", *common, "--ddp",
                          "--out", str(tmp_path / "two")], capture_output=True, text=True,
                         env=env)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("adapted.pt") == 1          # rank 0 reports, once
    a = load_model(tmp_path / "one" / "adapted.pt").state_dict
    b = load_model(tmp_path / "two" / "adapted.pt").state_dict
    for key in a:
        np.testing.assert_allclose(b[key].double().numpy(), a[key].double().numpy(),
                                   rtol=1e-4, atol=1e-5, err_msg=key)
