"""What to fetch: the manifest (``models.toml``), its lock (``models.lock``) and the path rules.

Pure data: parsing and validating files, no network and no writes. May import only
:mod:`seeder.errors`; every other package may import it.
"""
