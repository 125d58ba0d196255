"""The Sluice node agent: OVSDB, pod attachment, IPAM and the CNI server."""
