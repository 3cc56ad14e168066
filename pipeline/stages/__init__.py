"""The pipeline's stages, one module each: prepare, train, evaluate, export, bench."""
