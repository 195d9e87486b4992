"""`nhl serve`: retrieval over the network, from the model behind a registry alias or a model file.

- models resolve through `nhl.serving` (`resolve_model`, and `model_version`: which version an
  alias points to now, so polling costs no model load);
- `engine`: an immutable `Snapshot` (model, database codes, one FAISS index per length, query
  codes) built aside and swapped in whole by `Engine` when the alias moves;
- `uploads`: uploaded bytes -> an image tensor, refusing non-images and decompression bombs
  by the size the header declares, before decoding;
- `app` (the web face, layer 5): the page, the JSON API and Prometheus metrics (FastAPI).
"""
