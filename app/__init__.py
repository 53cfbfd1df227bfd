"""Reference app: a stand-in for the real service that uses the seeded models.

It does what any model-serving app should do at start-up — refuse to run on missing or
truncated models, and open each file the way its loader would — then serves two endpoints:

    GET /healthz   200 once the models were checked and opened
    GET /models    what is installed: revision/commit, files, sizes, sha256, header facts

Replace this package with your app; keep the start-up check (``seeder.check``) if you can.
"""
