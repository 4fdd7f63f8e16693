"""glibc heap tuning of CPU inference (``hf_vtok.utils.allocator``): applied once, by the first oneDNN linear of an
inference call, never by training; it stops the per-call page faults of a heap whose trim threshold is below the
call's working set; the user's own heap settings and ``HF_VTOK_HEAP_TUNING=0`` switch it off."""

import json
import os
import subprocess
import sys

import pytest

from hf_vtok.utils import allocator
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="the heap is not glibc's here")

# The script fixes glibc's thresholds where a process starts (mmap 128 KiB, trim twice that): every 1 MiB block of a
# call is then mapped afresh and page-faulted in, as the activations of a process that has freed no large block are.
SCRIPT = """
import json, resource
import torch
from torch import nn
from hf_vtok.utils import allocator, prepack
torch.set_num_threads(1)
glibc = allocator._glibc()
assert glibc.mallopt(allocator._M_MMAP_THRESHOLD, 2**17) == 1
assert glibc.mallopt(allocator._M_TRIM_THRESHOLD, 2**18) == 1
layer = nn.Linear(1024, 1024)
prepack.enable_fast_linear(layer)
hidden = torch.randn(256, 1024)

def faults_per_call(calls=5):
    counts = []
    for _ in range(calls):
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.ones(2**18) for _ in range(8)]  # 8 x 1 MiB, alive together
        del blocks
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
    return min(counts[1:])

layer(hidden)  # gradients recorded: F.linear, the heap stays as it is
trained = allocator.tune_heap_for_inference.cache_info().currsize
before = faults_per_call()
with torch.inference_mode():
    layer(hidden)
print(json.dumps({"tuned_by_training": trained, "called": allocator.tune_heap_for_inference.cache_info().currsize,
                  "applied": allocator.tune_heap_for_inference(), "before": before, "after": faults_per_call()}))
"""


def _run(**environment) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("HF_VTOK_HEAP_TUNING", "GLIBC_TUNABLES")}
    env = {key: value for key, value in env.items() if not key.startswith("MALLOC_")}
    env.update(environment, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]))
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_first_inference_call_tunes_the_heap_and_ends_the_page_faults():
    result = _run()
    assert result["tuned_by_training"] == 0 and result["called"] == 1 and result["applied"] is True
    assert result["before"] >= 1024, result  # the 8 MiB refaulted: 2048 pages
    assert result["after"] < 64, result


@pytest.mark.parametrize(
    "environment",
    [
        {"HF_VTOK_HEAP_TUNING": "0"},
        {"MALLOC_TRIM_THRESHOLD_": "262144"},
        {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"},
    ],
    ids=["switched-off", "malloc-variable", "glibc-tunable"],
)
def test_switch_and_user_settings_leave_the_heap_alone(environment):
    result = _run(**environment)
    assert result["applied"] is False
    assert result["after"] >= 1024, result  # still page-faulting: nothing was changed


def test_user_tuned_heap_reads_only_heap_settings():
    assert not allocator.user_tuned_heap({})
    assert not allocator.user_tuned_heap({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})
    assert allocator.user_tuned_heap({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert allocator.user_tuned_heap({"GLIBC_TUNABLES": "glibc.pthread.rseq=0:glibc.malloc.trim_threshold=1"})
