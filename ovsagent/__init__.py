"""The Sluice node agent: OVSDB, pod attachment, IPAM and the CNI server."""

import warnings

# python-ovs imports eventlet when it is installed (os-ken, the controller's framework, brings it
# into a shared image or venv), only to find out whether select is monkey-patched; eventlet then
# prints its own deprecation notice on every agent start. The agent does not use eventlet.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)
