"""Serving on many replicas: one FastAPI app and one engine per replica, wrapped unchanged.

- :mod:`service.scale.replica`: what every replica adds to the app (the ``x-tlstm-replica``
  header; a lifespan that reports started only once the engine is ready, and drains on
  shutdown);
- :mod:`service.scale.ray_app`: the Ray Serve application (``tlstm serve --ray``, and
  ``serve deploy`` with ``deploy/ray/serve-config.yaml``); imports ``ray``;
- :mod:`service.scale.proxy`: a middleware for Ray's HTTP proxy that ends a stream whose
  replica died with a clean error event.

Sessions need no sticky routing: a client carries a state token (:mod:`service.engine.state_token`)
and any replica continues from it.
"""
