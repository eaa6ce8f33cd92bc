"""Redis Cluster URLs, the replicated-Redis retry default and ``wait_for_replicas`` options."""

from __future__ import annotations

import pytest

from celeriac.exceptions import ImproperlyConfigured
from needs import need

client = need("celeriac.brokers.redis.client")
durability = need("celeriac.brokers.redis.durability")


def test_cluster_url_names_nodes_and_credentials() -> None:
    target = client.parse_target("redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,h3:7002/0")
    assert target.cluster_nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("h3", 7002))
    assert (target.username, target.password) == ("app", "s@cret")
    assert "ssl" not in target.kwargs
    assert client.parse_target("rediss+cluster://h:1").kwargs["ssl"] is True
    assert client.is_cluster_url("REDIS+CLUSTER://h:1") and not client.is_cluster_url("redis://h")


@pytest.mark.parametrize("url", ["redis+cluster://h:7000/3", "redis+cluster://h:7000?db=0"])
def test_cluster_url_refuses_a_database_and_query_options(url: str) -> None:
    with pytest.raises(ImproperlyConfigured):
        client.parse_target(url)


def test_registry_serves_every_role_for_cluster_urls() -> None:
    from celeriac.brokers import registry

    for role in (registry.BROKER, registry.RESULTS, registry.BEAT):
        assert registry.serves("redis+cluster://h:7000", role)
        assert registry.serves("rediss+cluster://h:7000", role)


def test_failover_retry_default_only_on_replicated_urls() -> None:
    plain = durability.retry_policy_for("redis://h", {})
    assert plain.max_retries == 3
    for url in ("sentinel://h:26379", "redis+cluster://h:7000"):
        assert durability.retry_policy_for(url, {}).max_retries == 20
        assert durability.retry_policy_for(url, {"retry_policy": {"max_retries": 1}}
                                           ).max_retries == 1


def test_wait_for_replicas_options() -> None:
    assert durability.wait_command({}) is None
    assert durability.wait_command({"wait_for_replicas": 2}) == ("WAIT", 2, 1000)
    assert durability.wait_command({"wait_for_replicas": 1,
                                    "wait_for_replicas_timeout": 0.25}) == ("WAIT", 1, 250)
    for bad in ({"wait_for_replicas": -1}, {"wait_for_replicas": "x"},
                {"wait_for_replicas": 1, "wait_for_replicas_timeout": 0}):
        with pytest.raises(ImproperlyConfigured):
            durability.wait_command(bad)
    durability.checked_wait({"wait_for_replicas": 1}, [1, 2])
    with pytest.raises(Exception, match="only 0 of 1 replicas"):
        durability.checked_wait({"wait_for_replicas": 1}, [0])
