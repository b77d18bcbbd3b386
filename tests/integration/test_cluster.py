"""The throwaway cluster helper itself: migrated at hand-over, and usable again after a clean stop or a crash."""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.cluster import Cluster


def _history(cluster: Cluster) -> int:
    with psycopg.connect(cluster.url("gnomon")) as conn:
        row = conn.execute("SELECT count(*) FROM gnomon_schema_history").fetchone()
    assert row is not None
    return int(row[0])


def test_the_cluster_comes_migrated_and_survives_restarts(throwaway_cluster: Cluster) -> None:
    applied = _history(throwaway_cluster)
    assert applied >= 1
    throwaway_cluster.restart("fast")
    throwaway_cluster.restart("immediate")
    assert _history(throwaway_cluster) == applied


def test_a_stopped_cluster_refuses_connections(throwaway_cluster: Cluster) -> None:
    throwaway_cluster.stop("fast")
    assert not throwaway_cluster.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(throwaway_cluster.url("gnomon"), connect_timeout=2).close()
    throwaway_cluster.start()
    assert throwaway_cluster.running
