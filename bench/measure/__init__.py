"""``bench run``'s one pipeline: prepare (build, compile, analyse), time, peaks, profile, and the record it makes."""
