"""Moving bytes: HTTP, the one retry policy, partial files, one stream or many Range parts.

:func:`.download.download` fills a partial file with a locked file's bytes, resumable, retried and
verified (size and digest) before it returns; the caller renames it into place. Modules:
``transport`` (HTTP over http.client, requests for proxies), ``retry`` (which failures are
transient, backoff, ``Retry-After``, the attempt budget), ``partial`` (the partial file and its
``.ranges`` sidecar), ``stream`` (one connection), ``parts`` (many) and ``download`` (the
dispatcher between them). May import :mod:`seeder.spec`, :mod:`seeder.integrity`,
:mod:`seeder.settings` and the base modules (errors, log), never :mod:`seeder.store` or above.
"""
