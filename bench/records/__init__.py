"""Records: the schema every writer and reader uses, the atomic store, and the context each record carries."""
