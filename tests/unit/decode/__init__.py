"""Unit tests of the pure decoders on recorded kernel bytes and of the journal codec."""
