"""The CNI plugin suite: conformance of the real executable, the agent protocol, start-up weight."""
