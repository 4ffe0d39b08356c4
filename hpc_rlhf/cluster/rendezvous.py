"""The train group's torch.distributed rendezvous host (runtime.rendezvous_addr), checked before use.

    host = rendezvous_host(addr, hosts)   # on the first trainer; hosts: every trainer's host name

`addr` set: taken as it is. `addr` "": the address the first trainer's host name resolves to. Many Linux
installs map their own host name to 127.0.1.1 (Debian's /etc/hosts): the trainers on other nodes would
then dial their own loopback and wait out the timeout. So when the trainers span more than one host and the
name resolves to a loopback address, this is a one-line UserError that lists the host's own addresses to
choose from, instead of a hang.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

from hpc_rlhf.errors import UserError

_SIOCGIFADDR = 0x8915


def interface_addresses() -> list[tuple[str, str]]:
    """(interface, IPv4 address) of this host's non-loopback interfaces that have one."""
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                req = struct.pack("256s", name.encode()[:15])
                ip = socket.inet_ntoa(fcntl.ioctl(s.fileno(), _SIOCGIFADDR, req)[20:24])
            except OSError:  # no IPv4 address on it
                continue
            if not ipaddress.ip_address(ip).is_loopback:
                out.append((name, ip))
    return out


def choose_host(addr: str, resolved: str, hosts: list[str], here: list[tuple[str, str]]) -> str:
    """The rendezvous host: `addr` if set, else `resolved` (what hosts[0]'s name resolves to), refused
    with one line when it is loopback and the trainers are on several hosts (`here`: hosts[0]'s addresses)."""
    if addr:
        return addr
    if len(set(hosts)) > 1 and ipaddress.ip_address(resolved).is_loopback:
        choices = ", ".join(f"{ip} ({name})" for name, ip in here) or "none found"
        raise UserError(
            f"the train group spans hosts {', '.join(sorted(set(hosts)))}, but host {hosts[0]}'s name resolves to "
            f"{resolved}, a loopback address the other hosts cannot reach: set runtime.rendezvous_addr to an "
            f"address of {hosts[0]} they reach (its addresses: {choices}), or map its name to one in /etc/hosts"
        )
    return resolved


def rendezvous_host(addr: str, hosts: list[str]) -> str:
    """choose_host for this process (the first trainer): hosts[0] is its own name."""
    if addr:
        return addr
    return choose_host("", socket.gethostbyname(socket.gethostname()), hosts, interface_addresses())
