"""TLS for a node's ports and its peer links (etcd's flags): reading and
checking the files (``material``), the state both sides are built from
(``node_tls``), the REST port's TLS (``rest``), the peer protocol's check of
its callers (``peer_guard``) and SIGHUP reloads (``service``)."""

from dkv.tls.material import TlsError, TlsMaterial, load_material
from dkv.tls.node_tls import NodeTls

__all__ = ["NodeTls", "TlsError", "TlsMaterial", "load_material"]
