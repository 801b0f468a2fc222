"""The extension points, one catalog each, free of TensorFlow so the config and the CLI's help read
them cheaply: methods.py (explanation methods), models.py (architectures), sources.py (datasets).
Each entry holds every property of its item; the code that runs an entry lives with its layer
(cxr.explain.methods, cxr.models.build, cxr.data.sources)."""
