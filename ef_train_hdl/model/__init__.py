"""The host-side numpy model of the accelerator (bit-exact) and its float64 reference."""
