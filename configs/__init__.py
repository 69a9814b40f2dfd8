"""dtf's example configs, installed as the package ``dtf_configs`` so that ``dtf up`` finds its
worker profiles (``workers/*.toml``) outside a checkout too; the suites and ``broker.toml`` ship
beside them as examples to copy. A package only so the wheel can carry the files: no code here.
"""
