"""Tests of the controller: cluster model, dirty set, OpenFlow messages, config."""
