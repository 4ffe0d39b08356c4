"""The train group's rendezvous host (cluster/rendezvous.py): a loopback name across hosts is refused."""

from __future__ import annotations

import ipaddress

import pytest

from hpc_rlhf.cluster.rendezvous import choose_host, interface_addresses
from hpc_rlhf.errors import UserError

HERE = [("eth0", "10.217.0.11"), ("ib0", "192.168.7.3")]


def test_a_set_address_is_taken_as_it_is():
    assert choose_host("10.0.0.5", "127.0.1.1", ["a", "b"], HERE) == "10.0.0.5"


@pytest.mark.parametrize("hosts", [["a"], ["a", "a"]])
def test_loopback_is_fine_when_every_trainer_is_on_one_host(hosts):
    assert choose_host("", "127.0.1.1", hosts, HERE) == "127.0.1.1"


def test_a_routable_name_is_used_across_hosts():
    assert choose_host("", "10.217.0.11", ["node1", "node2"], HERE) == "10.217.0.11"


def test_loopback_across_hosts_is_one_line_naming_the_choices():
    with pytest.raises(UserError) as e:
        choose_host("", "127.0.1.1", ["node1", "node1", "node2"], HERE)
    msg = str(e.value)
    assert "\n" not in msg and "spans hosts node1, node2" in msg and "resolves to 127.0.1.1" in msg
    assert "set runtime.rendezvous_addr" in msg and "10.217.0.11 (eth0), 192.168.7.3 (ib0)" in msg


def test_this_hosts_addresses_are_ipv4_and_not_loopback():
    for name, ip in interface_addresses():
        assert name and not ipaddress.ip_address(ip).is_loopback and ipaddress.ip_address(ip).version == 4
