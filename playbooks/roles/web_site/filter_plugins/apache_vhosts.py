"""Read `apache2ctl -S` and find ServerNames served by more than one vhost."""

import re

_NAMED = re.compile(r"^(\S+:\d+)\s+is a NameVirtualHost\s*$")
_SINGLE = re.compile(r"^(\S+):(\d+)\s+(\S+) \((.+)\)\s*$")
_NAMEVHOST = re.compile(r"^\s+port (\d+) namevhost (\S+) \((.+)\)\s*$")
_ALIAS = re.compile(r"^\s+(?:wild )?alias (\S+)\s*$")
_WILDCARD = {"*", "_default_"}


def vhost_names(output):
    """(address, port, name, source) for each ServerName and alias in `apache2ctl -S`."""
    entries = []
    address = None
    last = None
    for line in output.splitlines():
        if line.startswith("ServerRoot:"):
            break
        named = _NAMED.match(line)
        if named:
            address = named.group(1).rsplit(":", 1)[0]
            continue
        single = _SINGLE.match(line)
        if single:
            address = single.group(1)
            last = (address, single.group(2), single.group(3).lower(), single.group(4))
            entries.append(last)
            continue
        namevhost = _NAMEVHOST.match(line)
        if namevhost and address:
            last = (address, namevhost.group(1), namevhost.group(2).lower(), namevhost.group(3))
            entries.append(last)
            continue
        alias = _ALIAS.match(line)
        if alias and last:
            entries.append(last[:2] + (alias.group(1).lower(), last[3]))
    return entries


def _overlap(a, b):
    return a == b or a in _WILDCARD or b in _WILDCARD


def apache_duplicate_names(output, names=None):
    """Names served by two vhosts on the same port and an overlapping address.

    A wildcard address (`*`) overlaps every address on its port. With `names`,
    only duplicates of those names are reported.
    """
    wanted = {n.lower() for n in names} if names is not None else None
    entries = vhost_names(output)
    found = set()
    for i, (addr_a, port_a, name_a, src_a) in enumerate(entries):
        if wanted is not None and name_a not in wanted:
            continue
        for addr_b, port_b, name_b, src_b in entries[i + 1:]:
            if name_a == name_b and port_a == port_b and src_a != src_b and _overlap(addr_a, addr_b):
                found.add(f"{name_a} on {addr_a}:{port_a} and {addr_b}:{port_b} ({src_a}; {src_b})")
    return sorted(found)


class FilterModule:
    def filters(self):
        return {"apache_duplicate_names": apache_duplicate_names}
