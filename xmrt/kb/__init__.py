"""Knowledge base: loaders, splitting, the Chroma + BM25 index, hybrid search, export/import and evaluation."""
