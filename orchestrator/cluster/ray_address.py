"""``--address``, checked in seconds before ``ray.init``, which retries an address that is not a Ray
cluster for minutes: nothing listening there, or an HTTP server (the usual slip: the dashboard's port,
8265, for the GCS's, 6379)."""
from __future__ import annotations

import socket


class ClusterUnavailable(RuntimeError):
    """``--address`` names no Ray cluster; the message names the fix."""


FIX = ("pass the GCS address of a running cluster (HEAD:6379, which `ray start --head` prints), or "
       "`--address auto` on one of its nodes")


def check_ray_address(address: str | None) -> None:
    if address is None or address == "auto":
        return  # a local Ray, or the one `ray start` recorded on this node (Ray's own message if none)
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterUnavailable(f"--address {address} is not HOST:PORT; {FIX}")
    try:
        connection = socket.create_connection((host, int(port)), timeout=3)
    except OSError as exc:
        raise ClusterUnavailable(f"--address {address}: nothing answers there ({exc.strerror or exc}); {FIX}") from None
    with connection:
        if address.startswith("ray://"):
            return  # Ray Client's server: what answers is up to ray.init
        # A GCS speaks gRPC (HTTP/2) and never answers an HTTP/1.0 request with a status line.
        connection.settimeout(2)
        try:
            connection.sendall(b"GET / HTTP/1.0\r\nHost: resolab\r\n\r\n")
            answer = connection.recv(16)
        except OSError:
            answer = b""
    if answer.startswith(b"HTTP/"):
        raise ClusterUnavailable(f"--address {address} is an HTTP server (Ray's dashboard, or another service), "
                                 f"not a Ray cluster's GCS; {FIX}")
