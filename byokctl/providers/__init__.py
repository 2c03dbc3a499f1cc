"""Provider adapters (lazy SDK imports), the loopback emulator and the model catalog."""
