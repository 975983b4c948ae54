"""BM25 retrieval over the user's own passages: corpus reader, index, search and the `qalign retrieve` command."""
