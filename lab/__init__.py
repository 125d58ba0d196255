"""The Sluice lab: real OVS nodes in network namespaces, an API-server stand-in, and the CLI."""
