"""Unit tests of the pure core: the rules and correlator on streams built from lab recordings, the words of each event."""
