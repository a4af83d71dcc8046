"""Models: resolve a model argument (offline default, tiny test models, local directory, adapter, Hub id),
load it, and merge adapters."""
