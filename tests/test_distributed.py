"""Data-parallel training across machines: torchrun with two "nodes" of one process each (gloo over the
loopback interface) updates the parameters exactly as one process does on the same global batch; ``--compile`` works on the
CPU."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import plan_tiny_3d_fullres, write_tiny_dataset

from boxunet.training.distributed import ProcessGroupInfo, free_port, training_network

WORKER = Path(__file__).with_name("ddp_step_worker.py")


def _environment(roots: dict) -> dict:
    environment = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    environment.update({f"boxunet_{kind}": str(path) for kind, path in roots.items()})
    return environment


@pytest.mark.slow
def test_two_nodes_update_like_one_process_on_the_global_batch(roots, tmp_path):
    write_tiny_dataset(roots["raw"], num_cases=5, with_boxes=False)
    plan_tiny_3d_fullres()
    environment = _environment(roots)
    single = tmp_path / "single.pt"
    subprocess.run([sys.executable, str(WORKER), str(single)], env=environment, check=True, timeout=300)
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                               str(WORKER), str(tmp_path / "two_nodes.pt")], env=environment)
             for rank in (0, 1)]
    assert [node.wait(timeout=300) for node in nodes] == [0, 0]
    one, two = torch.load(single), torch.load(tmp_path / "two_nodes.pt")
    moved = 0
    for name, parameter in one["parameters"].items():
        update_one = parameter - one["initial"][name]
        update_two = two["parameters"][name] - two["initial"][name]
        assert torch.allclose(update_one, update_two, atol=1e-6, rtol=1e-3), name
        moved += int(update_one.abs().max() > 1e-6)
    assert moved > len(one["parameters"]) // 2, "the step changed most parameters"


@pytest.mark.slow
def test_compiled_network_on_the_cpu_computes_what_the_eager_network_computes():
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.LeakyReLU(), torch.nn.Conv3d(4, 2, 1))
    batch = torch.randn(2, 1, 8, 12, 10)
    eager = network(batch)
    compiled = training_network(network, ProcessGroupInfo(), compile_network=True)
    assert compiled is not network  # the torch.compile wrapper, on the CPU as on CUDA
    assert torch.allclose(compiled(batch), eager, atol=1e-5)
