"""OCI registries: the distribution API (client.py), credentials and tokens (auth.py), and the artifact
formats models come in (modelpack.py). Used by sources/oci.py (pull) and commands/push.py (push).

May import :mod:`seeder.fetch` (every request goes through its transport and retry policy), :mod:`seeder.spec`
and the base modules, never :mod:`seeder.store`, :mod:`seeder.sources` or above.
"""
