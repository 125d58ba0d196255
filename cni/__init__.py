"""The Sluice CNI plugin executable: standard library only, so that it starts fast."""
