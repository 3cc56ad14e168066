"""Serving exported models with onnxruntime behind FastAPI, with server-side streaming sessions."""
