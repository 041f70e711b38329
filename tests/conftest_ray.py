"""One Ray cluster for the whole test session (starting Ray costs seconds).

A `ray.cluster_utils.Cluster` rather than a plain `ray.init`, so that a test can add worker
nodes to it and kill them. The head has 2 CPUs like this machine; no dashboard, and worker
logs stay out of the test output.
"""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "object_store_memory": 256 << 20,
        "_system_config": {"worker_niceness": 0}})  # as rgbatch.pipeline.ray_session
    ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.ERROR)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
