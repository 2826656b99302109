"""KnowledgeService: help-centre articles, chunked and embedded, with hybrid (vector + full-text) search."""
